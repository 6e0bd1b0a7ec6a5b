"""The control plane's certificates, made with the openssl command line (EC P-256, 30 days).

One CA signs the serving certificates (kube-apiserver, kwok's kubelet endpoint) and the clients'
(`admin` in `system:masters` for kubectl and the components); a second CA signs the front proxy's
client certificate, with which kube-apiserver forwards requests to the aggregated metrics API.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "30"
KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
# The apiserver's names: loopback, and the in-cluster Service `kubernetes` (first IP of the range).
APISERVER_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "IP:127.0.0.1,IP:10.96.0.1"
)


@dataclass(frozen=True)
class Certs:
    dir: Path

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def complete(self) -> bool:
        return all(self.crt(n).exists() for n in ("ca", "apiserver", "admin", "front-proxy-client", "kwok")) and (
            self.dir / "sa.pub"
        ).exists()


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _ca(certs: Certs, name: str, cn: str) -> None:
    _openssl("req", "-x509", *KEY, "-days", DAYS, "-subj", f"/CN={cn}", "-keyout", str(certs.key(name)),
             "-out", str(certs.crt(name)), "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(certs: Certs, name: str, ca: str, subject: str, usage: str, sans: str | None = None) -> None:
    ext = ["-addext", "basicConstraints=critical,CA:FALSE", "-addext", f"extendedKeyUsage={usage}",
           "-addext", "keyUsage=critical,digitalSignature,keyEncipherment"]
    if sans:
        ext += ["-addext", f"subjectAltName={sans}"]
    _openssl("req", "-x509", *KEY, "-days", DAYS, "-subj", subject, "-keyout", str(certs.key(name)),
             "-out", str(certs.crt(name)), "-CA", str(certs.crt(ca)), "-CAkey", str(certs.key(ca)), *ext)


def ensure(directory: Path) -> Certs:
    """Create every certificate and key once; later starts reuse them."""
    certs = Certs(directory)
    if certs.complete:
        return certs
    directory.mkdir(parents=True, exist_ok=True)
    _ca(certs, "ca", "parley-local-kube-ca")
    _ca(certs, "front-proxy-ca", "parley-local-front-proxy-ca")
    _leaf(certs, "apiserver", "ca", "/CN=kube-apiserver", "serverAuth", APISERVER_SANS)
    _leaf(certs, "kwok", "ca", "/CN=kwok", "serverAuth", "DNS:localhost,IP:127.0.0.1")
    _leaf(certs, "admin", "ca", "/O=system:masters/CN=admin", "clientAuth")
    _leaf(certs, "front-proxy-client", "front-proxy-ca", "/CN=front-proxy-client", "clientAuth")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(directory / "sa.key"))
    _openssl("ec", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))
    return certs
