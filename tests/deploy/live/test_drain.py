"""`kubectl drain` of a kwok node honours the PodDisruptionBudgets: with nowhere for replacements
to go, the budget of search (maxUnavailable 1) lets exactly one of its pods be evicted and refuses
every further eviction; once the nodes take pods again, the drain completes."""

from __future__ import annotations

import pytest

from deploy.kube.cluster import NODES
from tests.deploy.live import kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SELECTOR = "app.kubernetes.io/name=search"


def _running(ns: str) -> dict[str, list[str]]:
    """node -> search pods on it (not terminating)."""
    out: dict[str, list[str]] = {}
    for pod in kube.items("pods", "-n", ns, "-l", SELECTOR):
        if not pod["metadata"].get("deletionTimestamp") and pod["spec"].get("nodeName"):
            out.setdefault(pod["spec"]["nodeName"], []).append(pod["metadata"]["name"])
    return out


def _drain(node: str, timeout: str):
    return kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--pod-selector={SELECTOR}",
                        f"--timeout={timeout}", check=False, timeout=120)


def test_drain_respects_the_pod_disruption_budget(applied):
    ns = applied["prod"].namespace
    pdb = kube.get("pdb", "search", "-n", ns)
    assert pdb["spec"]["maxUnavailable"] == 1
    kube.wait_for("search Available with its 3 replicas", lambda: kube.get("deployment", "search", "-n", ns)
                  ["status"].get("availableReplicas") == 3, timeout=120)
    kube.wait_for("the budget to allow one disruption", lambda: kube.get("pdb", "search", "-n", ns)
                  ["status"].get("disruptionsAllowed") == 1, timeout=60)
    try:
        for node in NODES:
            kube.kubectl("cordon", node)
        before = _running(ns)
        refused = []
        for node in sorted(before, key=lambda n: len(before[n])):
            result = _drain(node, "10s")
            if result.returncode != 0:
                refused.append(result.stdout + result.stderr)
        after = _running(ns)
        evicted = sum(map(len, before.values())) - sum(map(len, after.values()))
        assert evicted == 1, f"{evicted} search pods evicted with maxUnavailable 1: {before} -> {after}"
        assert refused and all("disruption budget" in r for r in refused), refused
        assert kube.get("pdb", "search", "-n", ns)["status"]["disruptionsAllowed"] == 0
    finally:
        for node in NODES:
            kube.kubectl("uncordon", node, check=False)

    # Room again: the replacement is scheduled, and a drain of a node now completes.
    kube.wait_for("search back to 3 available", lambda: kube.get("deployment", "search", "-n", ns)
                  ["status"].get("availableReplicas") == 3, timeout=120)
    node = sorted(_running(ns))[0]
    try:
        result = _drain(node, "90s")
        assert result.returncode == 0, result.stdout + result.stderr
        assert node not in _running(ns)
    finally:
        kube.kubectl("uncordon", node, check=False)
    kube.wait_for("search back to 3 available", lambda: kube.get("deployment", "search", "-n", ns)
                  ["status"].get("availableReplicas") == 3, timeout=120)
