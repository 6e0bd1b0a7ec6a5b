"""The live stage: the overlays applied to a real control plane (deploy/kube), started once per
session (or reused when `python -m deploy.kube up` already runs) and stopped if it was started here.
Needs `make k8s-tools` (`make test` builds them in the background while the other tests run, and
this stage waits for that build); a missing tool fails the tests that need it, with how to build it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.kube import cluster
from tests.deploy.live import kube
from tests.deploy.live.background import wait_for_build


@pytest.fixture(scope="session")
def control_plane() -> Iterator[None]:
    wait_for_build("PARLEY_K8S_TOOLS_STATUS", "k8s tools")
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
