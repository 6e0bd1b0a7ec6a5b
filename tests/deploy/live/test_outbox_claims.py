"""The response outbox survives what took an emptyDir with it: a deleted pod, a drained node and a
scale-down each bring the replica back under its own name on its own claim and volume, so the
events it had acknowledged and not yet delivered are still there for it to send."""

from __future__ import annotations

import json

import pytest

from deploy.kube.cluster import NODES
from tests.deploy.live import kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SELECTOR = "app.kubernetes.io/name=response"


def _pods(ns: str) -> dict[str, dict]:
    """name -> running response pod (not terminating)."""
    return {p["metadata"]["name"]: p for p in kube.items("pods", "-n", ns, "-l", SELECTOR)
            if not p["metadata"].get("deletionTimestamp")}


def _claims(ns: str) -> dict[str, str]:
    """outbox claim -> the volume it is bound to."""
    return {c["metadata"]["name"]: c["spec"].get("volumeName", "") for c in kube.items("pvc", "-n", ns)
            if c["metadata"]["name"].startswith("outbox-response-")}


def _claim_of(pod: dict) -> str:
    return next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if v["name"] == "outbox")


def _ready(ns: str, replicas: int) -> bool:
    sts = kube.get("statefulset", "response", "-n", ns)
    return sts["spec"].get("replicas") == replicas and kube.available(sts)


def _back(ns: str, name: str, old_uid: str) -> dict | bool:
    pod = _pods(ns).get(name)
    ok = pod and pod["metadata"]["uid"] != old_uid and kube.conditions(pod).get("Ready", {}).get("status") == "True"
    return ok and pod


def _set_bounds(ns: str, low: int, high: int) -> None:
    kube.kubectl("patch", "hpa", "response", "-n", ns, "--type=merge",
                 "-p", json.dumps({"spec": {"minReplicas": low, "maxReplicas": high}}))


def test_a_replaced_response_replica_keeps_its_outbox_claim(applied):
    ns = applied["prod"].namespace
    kube.wait_for("response ready with its 3 replicas", lambda: _ready(ns, 3), timeout=120)
    kube.wait_for("3 outbox claims bound", lambda: len([v for v in _claims(ns).values() if v]) == 3, timeout=60)
    claims = _claims(ns)
    assert set(claims) == {f"outbox-response-{i}" for i in range(3)}
    pods = _pods(ns)
    assert {n: _claim_of(p) for n, p in pods.items()} == {f"response-{i}": f"outbox-response-{i}" for i in range(3)}

    # A pod deleted (a rolling update deletes each pod in turn): the same name, on the same claim.
    old = pods["response-1"]
    kube.kubectl("delete", "pod", "response-1", "-n", ns, "--wait=false")
    new = kube.wait_for("response-1 back", lambda: _back(ns, "response-1", old["metadata"]["uid"]), timeout=120)
    assert _claim_of(new) == "outbox-response-1" and _claims(ns) == claims

    # A drained node: the evicted pod comes back on another node, on the same claim and volume.
    kube.wait_for("response ready again", lambda: _ready(ns, 3), timeout=120)
    kube.wait_for("the budget to allow one disruption", lambda: kube.get("pdb", "response", "-n", ns)
                  ["status"].get("disruptionsAllowed") == 1, timeout=60)
    old = _pods(ns)["response-0"]
    node = old["spec"]["nodeName"]
    try:
        # --delete-emptydir-data: the pod's /tmp; the outbox is on the claim, which the eviction leaves.
        result = kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--pod-selector={SELECTOR}",
                              "--timeout=90s", check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        new = kube.wait_for("response-0 back", lambda: _back(ns, "response-0", old["metadata"]["uid"]), timeout=120)
        assert new["spec"]["nodeName"] in NODES and new["spec"]["nodeName"] != node
        assert _claim_of(new) == "outbox-response-0" and _claims(ns) == claims
    finally:
        kube.kubectl("uncordon", node, check=False)

    # Scaled down by its autoscaler: the last ordinal's claim stays; scaled up, the replica is on it again.
    hpa = kube.get("hpa", "response", "-n", ns)["spec"]
    old = _pods(ns)["response-2"]
    try:
        _set_bounds(ns, 2, 2)
        kube.wait_for("response scaled to 2", lambda: _ready(ns, 2) and "response-2" not in _pods(ns), timeout=120)
        assert _claims(ns) == claims, "the scaled-down ordinal's claim went (whenScaled must be Retain)"
        _set_bounds(ns, 3, 3)
        new = kube.wait_for("response-2 back", lambda: _back(ns, "response-2", old["metadata"]["uid"]), timeout=120)
        assert _claim_of(new) == "outbox-response-2" and _claims(ns) == claims
    finally:
        _set_bounds(ns, hpa["minReplicas"], hpa["maxReplicas"])
    kube.wait_for("response ready with its 3 replicas", lambda: _ready(ns, 3), timeout=120)
