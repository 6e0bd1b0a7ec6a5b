"""The image built from the Dockerfile without a daemon (buildah, chroot isolation, a local
debootstrap base) and started with podman on runc: a non-root user, a read-only root, no build
leftovers, and every Deployment's (and the StatefulSet response's) command answering its own liveness probe in the container
(no dependency is reachable: --network=none)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from deploy.kube import image as img
from tests.deploy.live.background import wait_for_build

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
# A liveness probe as the kubelet would run it, from inside the container (python of the image).
PROBE = """
import sys
kind, port, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "grpc":
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=what), timeout=3)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
else:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{what}", timeout=3) as resp:
        print("SERVING" if resp.status == 200 else resp.status)
"""


@pytest.fixture(scope="session")
def built() -> str:
    if missing := img.missing_tools():
        pytest.fail(f"missing {' '.join(missing)}: run `make image-test` (it installs them with apt)", pytrace=False)
    # `make test` builds the image in the background from its start (.ci/test.sh); alone, here.
    if not wait_for_build("PARLEY_IMAGE_BUILD_STATUS", "image"):
        img.ensure_base()
        img.build()
    return img.IMAGE


def _run(image: str, *cmd: str, extra: tuple[str, ...] = ()):
    return img.podman("run", "--rm", *img.ulimits(), *img.RUN_FLAGS, *extra, image, *cmd, check=False, quiet=True, timeout=120)


def test_image_runs_as_the_non_root_user(built):
    user = img.buildah("inspect", "--type=image", "--format", "{{.OCIv1.Config.User}}", built, quiet=True).stdout
    assert user.strip() == "10001:10001"
    result = _run(built, "id", "-u")
    assert result.returncode == 0 and result.stdout.strip() == "10001", result.stderr


def test_root_filesystem_is_read_only(built):
    for path in ("/app/x", "/opt/venv/x", "/x"):
        result = _run(built, "python", "-c", f"open({path!r}, 'w')")
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result.stderr)
    result = _run(built, "python", "-c", "open('/tmp/x', 'w').write('ok')")  # the pods' emptyDir
    assert result.returncode == 0, result.stderr


def test_image_carries_no_build_leftovers_nor_host_files(built):
    listing = _run(built, "sh", "-c", "ls -A /app; find /app /opt/venv -name '*.egg-info' -path '*parley*'")
    assert listing.returncode == 0, listing.stderr
    names = set(listing.stdout.split())
    assert {"services", "deploy"} <= names
    assert not {"build", "parley.egg-info", "Dockerfile", "tests", ".git", ".venv"} & names, listing.stdout
    assert "egg-info" not in listing.stdout
    # The host's pip configuration was mounted for the build only: the image keeps the base's
    # empty mount point, never the host's content.
    pip_conf = _run(built, "wc", "-c", "/etc/pip.conf")
    assert pip_conf.stdout.split()[:1] == ["0"], f"host pip configuration in the image: {pip_conf.stdout}"


def _probe_of(dep: dict) -> tuple[list[str], str | None, tuple[str, int, str]]:
    container = dep["spec"]["template"]["spec"]["containers"][0]
    probe = container["livenessProbe"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if "grpc" in probe:
        check = ("grpc", probe["grpc"]["port"], probe["grpc"].get("service", ""))
    else:
        port = probe["httpGet"]["port"]
        check = ("http", ports.get(port, port), probe["httpGet"]["path"])
    return container["command"], container.get("workingDir"), check


DEPLOYMENTS = ("search", "response", "scraper", "scraper-worker", "search-indexer", "analytics", "stream-worker")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def containers(built, rendered) -> Iterator[dict[str, tuple]]:
    """Every Deployment's and StatefulSet's command started once, side by side."""
    started: dict[str, tuple] = {}
    try:
        for dep in (d for kind in WORKLOAD_KINDS for d in rendered["prod"].of_kind(kind)):
            command, workdir, check = _probe_of(dep)
            name = f"parley-{dep['metadata']['name']}-{uuid.uuid4().hex[:6]}"
            # The token the Secret gives a pod: a service listening beyond loopback (the image's
            # 0.0.0.0) refuses to start with the well-known development one.
            extra = ("--detach", f"--name={name}", f"--env=PARLEY_ADMIN_TOKEN=image-test-{uuid.uuid4().hex}") + (
                (f"--workdir={workdir}",) if workdir else ())
            img.podman("run", *img.ulimits(), *img.RUN_FLAGS, *extra, built, *command, quiet=True, timeout=120)
            started[dep["metadata"]["name"]] = (name, check)
        yield started
    finally:
        for name, _ in started.values():
            img.podman("rm", "--force", "--time=2", name, check=False, quiet=True, timeout=60)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_each_command_answers_its_liveness_probe(containers, deployment):
    assert set(containers) == set(DEPLOYMENTS)
    name, (kind, port, what) = containers[deployment]
    answer = ""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        result = img.podman("exec", name, "python", "-c", PROBE, kind, str(port), what,
                            check=False, quiet=True, timeout=30)
        answer = result.stdout.strip() or result.stderr.strip()[-300:]
        if answer == "SERVING" or "container state improper" in answer:
            break
        time.sleep(2)
    logs = img.podman("logs", "--tail=8", name, check=False, quiet=True)
    assert answer == "SERVING", f"{deployment}: {answer}\n{(logs.stdout + logs.stderr)[-1500:]}"
