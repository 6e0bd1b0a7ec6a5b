"""Start and stop the local control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok (simulated nodes and pods) and metrics-server, each on a free port.

State lives in .local/kube/ of the checkout (certificates, etcd data, logs, pid files, the
kubeconfig); `down` stops only the processes whose pid files are there. The autoscaler's timing
flags are shortened so that a test sees it act in seconds rather than minutes; per-HPA
`behavior` (stabilisation windows, policies) is left to the manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.kube import certs as certs_mod

REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / "deploy" / "kube" / "tools"
STATE = Path(os.environ.get("PARLEY_KUBE_STATE", REPO / ".local" / "kube"))
HOST = "127.0.0.1"
# Start order; `down` stops in reverse.
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "metrics-server")
NODES = ("kwok-node-a", "kwok-node-b", "kwok-node-c")
ZONES = ("zone-a", "zone-b", "zone-c")
# The HorizontalPodAutoscaler controller's clock, shortened for tests (defaults: 15 s, 30 s, 5 min).
HPA_FLAGS = (
    "--horizontal-pod-autoscaler-sync-period=3s",
    "--horizontal-pod-autoscaler-initial-readiness-delay=5s",
    "--horizontal-pod-autoscaler-cpu-initialization-period=10s",
)
# kwok's nodes heartbeat through node leases (renewed every few seconds) rather than only through
# their status, which kwok patches about once a minute: without leases the node lifecycle controller
# takes every node for NotReady after its grace period and the pods with them. The grace period is
# doubled as well, for a machine too loaded to renew a lease on time.
NODE_LEASE_S = 40
NODE_FLAGS = ("--node-monitor-grace-period=80s",)
# Volumes: the controller-manager's own hostPath provisioner makes a PersistentVolume for each claim
# of the default StorageClass (bootstrap.STORAGE_CLASS), as a cloud's provisioner would; kwok's pods
# never mount it. It makes an empty directory per volume under /tmp/hostpath_pv (its fixed place),
# removed again by `down`.
STORAGE_FLAGS = ("--enable-hostpath-provisioner=true",)
HOSTPATH_DIR = Path("/tmp/hostpath_pv")
# metrics-server panics unless the resolution exceeds the kubelet request timeout.
METRICS_FLAGS = ("--metric-resolution=10s", "--kubelet-request-timeout=5s")


class KubeError(RuntimeError):
    pass


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (TOOLS_DIR / "versions.env").read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2 and not p[0].startswith("#"))}


def tools_dir() -> Path:
    return Path(os.environ.get("K8S_TOOLS_DIR", REPO / ".local" / "k8s"))


def binary(name: str) -> Path:
    v = versions()
    folder = {
        "etcd": f"etcd-{v['ETCD_VERSION']}",
        "kwok": f"kwok-{v['KWOK_VERSION']}",
        "metrics-server": f"metrics-server-{v['METRICS_SERVER_VERSION']}",
    }.get(name, f"kubernetes-{v['KUBERNETES_VERSION']}")
    path = tools_dir() / folder / name
    if not (path.parent / ".built").exists():
        raise KubeError(f"{name} is not built ({path}): run `make k8s-tools` first")
    return path


def crd_files() -> list[Path]:
    v = versions()
    keda = tools_dir() / f"crds-keda-{v['KEDA_VERSION']}"
    strimzi = sorted(tools_dir().glob("crds-strimzi-*"))
    if not (keda / ".built").exists() or not strimzi or not (strimzi[-1] / ".built").exists():
        raise KubeError("the Strimzi and KEDA CRDs are missing: run `make k8s-tools` first")
    return sorted(keda.glob("*.yaml")) + sorted(strimzi[-1].glob("*.yaml"))


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    metrics_server: int

    @classmethod
    def free(cls) -> Ports:
        socks = []
        for _ in cls.__dataclass_fields__:
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return cls(*ports)


def kubeconfig_path() -> Path:
    return STATE / "kubeconfig"


def _write_kubeconfig(certs: certs_mod.Certs, ports: Ports) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "parley-local",
        "clusters": [{"name": "parley-local", "cluster": {
            "server": f"https://{HOST}:{ports.apiserver}", "certificate-authority": str(certs.crt("ca"))}}],
        "users": [{"name": "admin", "user": {
            "client-certificate": str(certs.crt("admin")), "client-key": str(certs.key("admin"))}}],
        "contexts": [{"name": "parley-local", "context": {"cluster": "parley-local", "user": "admin"}}],
    }
    kubeconfig_path().write_text(json.dumps(config, indent=2))


def _commands(certs: certs_mod.Certs, ports: Ports) -> dict[str, list[str]]:
    kc = str(kubeconfig_path())
    c = certs
    return {
        "etcd": [
            str(binary("etcd")), "--data-dir", str(STATE / "etcd"), "--name", "parley-local",
            "--listen-client-urls", f"http://{HOST}:{ports.etcd}", "--advertise-client-urls", f"http://{HOST}:{ports.etcd}",
            "--listen-peer-urls", f"http://{HOST}:{ports.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{ports.etcd_peer}",
            "--initial-cluster", f"parley-local=http://{HOST}:{ports.etcd_peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes=1073741824",
        ],
        "kube-apiserver": [
            str(binary("kube-apiserver")), f"--etcd-servers=http://{HOST}:{ports.etcd}",
            f"--secure-port={ports.apiserver}", f"--bind-address={HOST}", f"--advertise-address={HOST}",
            f"--tls-cert-file={c.crt('apiserver')}", f"--tls-private-key-file={c.key('apiserver')}",
            f"--client-ca-file={c.crt('ca')}", "--authorization-mode=AlwaysAllow",
            f"--service-account-key-file={c.dir / 'sa.pub'}", f"--service-account-signing-key-file={c.dir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
            f"--requestheader-client-ca-file={c.crt('front-proxy-ca')}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={c.crt('front-proxy-client')}", f"--proxy-client-key-file={c.key('front-proxy-client')}",
        ],
        "kube-controller-manager": [
            str(binary("kube-controller-manager")), f"--kubeconfig={kc}", "--leader-elect=false",
            f"--secure-port={ports.controller_manager}", f"--bind-address={HOST}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            f"--service-account-private-key-file={c.dir / 'sa.key'}", f"--root-ca-file={c.crt('ca')}",
            "--use-service-account-credentials=false", "--controllers=*,-nodeipam,-service-lb-controller",
            *HPA_FLAGS, *NODE_FLAGS, *STORAGE_FLAGS,
        ],
        "kube-scheduler": [
            str(binary("kube-scheduler")), f"--kubeconfig={kc}", "--leader-elect=false",
            f"--secure-port={ports.scheduler}", f"--bind-address={HOST}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        ],
        "kwok": [
            str(binary("kwok")), f"--kubeconfig={kc}", "--manage-all-nodes=false",
            "--manage-nodes-with-label-selector=type=kwok", f"--node-ip={HOST}", f"--node-port={ports.kwok}",
            f"--server-address={HOST}:{ports.kwok}", f"--tls-cert-file={c.crt('kwok')}",
            f"--tls-private-key-file={c.key('kwok')}", f"--config={STATE / 'kwok.yaml'}",
            f"--node-lease-duration-seconds={NODE_LEASE_S}",
        ],
        "metrics-server": [
            str(binary("metrics-server")), f"--kubeconfig={kc}", f"--secure-port={ports.metrics_server}",
            f"--bind-address={HOST}", f"--cert-dir={STATE / 'metrics-server'}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--kubelet-use-node-status-port", "--kubelet-insecure-tls", "--kubelet-preferred-address-types=InternalIP",
            *METRICS_FLAGS,
        ],
    }


def _pid_file(name: str) -> Path:
    return STATE / "run" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def running() -> dict[str, int]:
    pids = {}
    for name in PROCESSES:
        try:
            pid = int(_pid_file(name).read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            pids[name] = pid
    return pids


def _spawn(name: str, cmd: list[str]) -> int:
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    with open(STATE / "logs" / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=STATE)
    _pid_file(name).write_text(str(proc.pid))
    return proc.pid


def _log_tail(name: str, lines: int = 20) -> str:
    try:
        return "\n".join((STATE / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _get(url: str, certs: certs_mod.Certs) -> int:
    ctx = ssl.create_default_context(cafile=str(certs.crt("ca")))
    ctx.load_cert_chain(str(certs.crt("admin")), str(certs.key("admin")))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait(what: str, check, timeout: float, logs: tuple[str, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name in logs:
            if name not in running():
                raise KubeError(f"{name} exited while waiting for {what}:\n{_log_tail(name)}")
        time.sleep(0.3)
    tails = "\n".join(f"--- {n}\n{_log_tail(n)}" for n in logs)
    raise KubeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Our pinned kubectl against the local control plane."""
    cmd = [str(binary("kubectl")), f"--kubeconfig={kubeconfig_path()}", *args]
    result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise KubeError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"==> {message}", file=sys.stderr, flush=True)


def up(progress: bool = True, timeout: float = 60.0) -> Path:
    """Start whatever is not running, wait until the API, the nodes and the metrics API answer,
    and return the kubeconfig's path. Idempotent."""
    from deploy.kube import bootstrap

    started = time.monotonic()
    if running().keys() == set(PROCESSES) and (STATE / "ready").exists():
        return kubeconfig_path()
    down(progress=False)
    for name in PROCESSES:
        binary(name)  # fail early, before anything starts, if a tool is missing
    STATE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(STATE / "etcd", ignore_errors=True)  # a fresh cluster every time: tests start clean
    certs = certs_mod.ensure(STATE / "certs")
    ports = Ports.free()
    (STATE / "ports.json").write_text(json.dumps(ports.__dict__))
    _write_kubeconfig(certs, ports)
    bootstrap.write_kwok_config(STATE / "kwok.yaml", binary("kwok").parent)
    cmds = _commands(certs, ports)
    _say(progress, f"etcd on {ports.etcd}, kube-apiserver on {ports.apiserver}")
    _spawn("etcd", cmds["etcd"])
    _spawn("kube-apiserver", cmds["kube-apiserver"])
    _wait("kube-apiserver /readyz", lambda: _get(f"https://{HOST}:{ports.apiserver}/readyz", certs) == 200,
          timeout, ("etcd", "kube-apiserver"))
    for name in PROCESSES[2:]:
        _spawn(name, cmds[name])
    _say(progress, "controller-manager, scheduler, kwok and metrics-server started; registering nodes and CRDs")
    bootstrap.apply(ports.metrics_server, crd_files(), NODES, ZONES)
    _wait("kwok nodes Ready", bootstrap.nodes_ready, timeout, PROCESSES)
    _wait("CRDs Established", bootstrap.crds_established, timeout, PROCESSES)
    _wait("the metrics API", bootstrap.metrics_available, timeout, PROCESSES)
    # Bootstrapped, not only started: a later `up` reuses only a plane that got this far.
    (STATE / "ready").write_text(f"{time.monotonic() - started:.1f}\n")
    _say(progress, f"control plane ready in {time.monotonic() - started:.1f} s; KUBECONFIG={kubeconfig_path()}")
    return kubeconfig_path()


def _volume_dirs() -> list[Path]:
    """The directories the hostPath provisioner made for this cluster's volumes, read while the API answers."""
    if "kube-apiserver" not in running() or not kubeconfig_path().exists():
        return []
    try:
        result = kubectl("get", "pv", "-o", "jsonpath={.items[*].spec.hostPath.path}", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return []
    return [Path(p) for p in result.stdout.split() if Path(p).parent == HOSTPATH_DIR]


def down(progress: bool = True) -> None:
    (STATE / "ready").unlink(missing_ok=True)
    volume_dirs = _volume_dirs()
    for name in reversed(PROCESSES):
        pid_file = _pid_file(name)
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            _say(progress, f"stopped {name} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    for directory in [*volume_dirs, HOSTPATH_DIR]:
        try:
            directory.rmdir()  # empty ones only: kwok's pods never write there
        except OSError:
            pass
