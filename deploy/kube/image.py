"""Build Parley's image from the Dockerfile without a daemon or a registry, and start it.

`python -m deploy.kube.image build` (used by `make image-test` and tests/deploy/test_image_live.py):
  1. a base image with Debian bookworm's Python 3.11, made with debootstrap from the mirror this
     machine's apt uses, imported into a project-local container storage (.local/image/) once;
  2. `buildah bud --pull=never --isolation=chroot` of the unchanged Dockerfile on that base (the
     PYTHON_IMAGE build argument), pip in the RUN steps reaching its index through the host's CA
     bundle and pip configuration, bind-mounted for the build only (never part of a layer).
Containers run with podman on runc (`--cgroup-manager=cgroupfs`), read-only, without a network,
with this process's open-files limit (see ulimits()).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PARLEY_IMAGE_STATE", REPO / ".local" / "image"))
BASE_IMAGE = "localhost/parley-python-base:3.11-bookworm"
IMAGE = "localhost/parley:test"
# minbase + what the Dockerfile runs: python (venv, pip), groupadd/useradd (passwd, in minbase).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# Host files the RUN steps may read (pip's index over TLS), mounted read-only during the build.
BUILD_MOUNTS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
RUN_FLAGS = ("--runtime=runc", "--cgroup-manager=cgroupfs", "--read-only", "--network=none")


def ulimits() -> tuple[str, ...]:
    """This process's open-files limit for the container. Rootful podman 4.3 otherwise asks for
    nofile 1048576 and nproc 32768 (`--ulimit host` does not change that), which runc cannot set
    without CAP_SYS_RESOURCE, as in a sandbox; a single service needs few processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (f"--ulimit=nofile={soft}:{hard}", "--ulimit=nproc=4096:4096")


class ImageError(RuntimeError):
    pass


def _storage() -> list[str]:
    driver = os.environ.get("PARLEY_IMAGE_STORAGE_DRIVER", "overlay")
    return [f"--root={STATE / 'storage'}", f"--runroot={STATE / 'run'}", f"--storage-driver={driver}"]


def _run(cmd: list[str], *, check: bool = True, timeout: float = 900, quiet: bool = False,
         input: str | None = None) -> subprocess.CompletedProcess:
    if not quiet:
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise ImageError(f"{cmd[0]} {cmd[1]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def buildah(*args: str, **kw) -> subprocess.CompletedProcess:
    return _run(["buildah", *_storage(), *args], **kw)


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return _run(["podman", *_storage(), "--cgroup-manager=cgroupfs", "--runtime=runc", *args], **kw)


def missing_tools() -> list[str]:
    return [t for t in ("buildah", "podman", "runc", "debootstrap") if shutil.which(t) is None]


def _apt_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = path.read_text() if path.is_file() else ""
        found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+bookworm\b", text, re.M)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type=image", name, check=False, quiet=True).returncode == 0


def ensure_base() -> float:
    """Make the base image once; returns the seconds spent (0 when it existed)."""
    if image_exists(BASE_IMAGE):
        return 0.0
    started = time.monotonic()
    rootfs = STATE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm",
          str(rootfs), _apt_mirror()], timeout=1200)
    # The build bind-mounts the host's pip configuration here; buildah 1.28 would otherwise leave
    # the mount point (an empty /etc/pip.conf) in every stage that has a RUN step.
    (rootfs / "etc" / "pip.conf").touch()
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*"):
            if item.is_file():
                item.unlink()
    ctr = buildah("from", "scratch", quiet=True).stdout.strip()
    try:
        mnt = buildah("mount", ctr, quiet=True).stdout.strip()
        _run(["cp", "-a", f"{rootfs}/.", mnt], quiet=True)
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8", "--cmd", "python3", ctr, quiet=True)
        buildah("commit", "--rm", ctr, BASE_IMAGE)
    except BaseException:
        buildah("rm", ctr, check=False, quiet=True)
        raise
    shutil.rmtree(rootfs, ignore_errors=True)
    return time.monotonic() - started


def build(tag: str = IMAGE) -> float:
    """`buildah bud` of the Dockerfile on the local base; returns the seconds it took."""
    started = time.monotonic()
    mounts = [f"--volume={p}:{p}:ro" for p in BUILD_MOUNTS if Path(p).is_file()]
    buildah("bud", "--pull=never", "--isolation=chroot", "--layers=true", f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
            *mounts, "--file", str(REPO / "Dockerfile"), "--tag", tag, str(REPO), timeout=1800)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.kube.image", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "clean"))
    args = parser.parse_args(argv)
    if args.command == "clean":
        shutil.rmtree(STATE, ignore_errors=True)
        return 0
    if missing := missing_tools():
        print(f"missing: {' '.join(missing)} (apt-get install buildah podman runc debootstrap)", file=sys.stderr)
        return 1
    base_s = ensure_base()
    build_s = build()
    print(f"base image {base_s:.0f} s, image build {build_s:.0f} s: {IMAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
