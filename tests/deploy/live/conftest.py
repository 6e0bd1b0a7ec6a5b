"""The live stage: the overlays applied to a real control plane (deploy/kube), started once per
session (or reused when `python -m deploy.kube up` already runs) and stopped if it was started here.
Needs `make k8s-tools` (`make test` builds them in the background while the other tests run, and
this stage waits for that build); a missing tool fails the tests that need it, with how to build it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.kube import cluster
from tests.deploy.live import kube


def _wait_for_tools_build(timeout: float = 3600.0) -> None:
    """`make test` builds the tools in the background (.ci/test.sh) and says where the build's exit
    status will be written: wait for it, showing progress, and fail with the log if it failed."""
    status = os.environ.get("PARLEY_K8S_TOOLS_STATUS")
    if not status:
        return
    path = Path(status)
    log = path.with_name("k8s-tools.log")
    started = time.monotonic()
    while not path.exists():
        waited = time.monotonic() - started
        if waited > timeout:
            pytest.fail(f"the k8s tools build did not finish in {timeout:.0f}s; see {log}", pytrace=False)
        if int(waited) % 30 == 0:
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            print(f"\nwaiting for the k8s tools build ({waited:.0f}s): {last[0] if last else 'starting'}", flush=True)
        time.sleep(1)
    if path.read_text().strip() != "0":
        tail = "\n".join(log.read_text().splitlines()[-30:]) if log.exists() else ""
        pytest.fail(f"the k8s tools build failed (exit {path.read_text().strip()}):\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[None]:
    _wait_for_tools_build()
    started_here = not cluster.running()
    try:
        cluster.up(progress=True)
    except cluster.KubeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield
    if started_here:
        cluster.down(progress=False)


@pytest.fixture(scope="session")
def applied(control_plane, rendered) -> dict[str, kube.Applied]:
    """Both overlays applied with `kubectl apply --server-side --validate=strict`, each with the
    example Secret (placeholders) an operator creates first."""
    return {name: kube.apply_overlay(rendered[name].docs) for name in ("dev", "prod")}
