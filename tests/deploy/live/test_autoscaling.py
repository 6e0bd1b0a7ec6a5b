"""Every HorizontalPodAutoscaler of the dev overlay seen acting on simulated CPU, all at once:
up to maxReplicas and no further (the Kafka consumers never past their topics' partitions), and
down only once the scale-down stabilisation window has passed. Read from the HPAs' conditions
and events as well as from the replica counts. The response service is a StatefulSet, scaled through
the same scale subresource; the claims of the ordinals it scales down stay (whenScaled: Retain), each
with its volume.

The live API server runs the real HPA controller and metrics-server; kwok reports each pod's CPU
from its `kwok.x-k8s.io/usage-cpu` annotation. The manifests' windows are minutes long (600 s for
the consumers); for a stage that runs in a few minutes the test sets shorter windows and policies
on the live objects (TEST_BEHAVIOR) and checks the controller honours those.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from deploy.kube import cluster
from services.settings import Settings
from tests.deploy.live import kube
from tests.deploy.policy import COMPONENTS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
USAGE = "kwok.x-k8s.io/usage-cpu"
DOWN_WINDOW_S = 30
# The window runs from the controller's last high recommendation, made at its last sync before the
# load stopped: up to one sync period before the moment this test sets the load down.
HPA_SYNC_S = next(float(f.rsplit("=", 1)[1].rstrip("s")) for f in cluster.HPA_FLAGS if "sync-period" in f)
TEST_BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": DOWN_WINDOW_S, "selectPolicy": "Max",
                  "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
}


@dataclass
class Seen:
    low: int
    high: int
    most: int = 0
    at_max: float | None = None
    first_down: float | None = None
    limited: bool = False       # ScalingLimited True, TooManyReplicas, while at maxReplicas
    stabilized: bool = False    # AbleToScale ScaleDownStabilized while the window runs
    replicas: list[int] = field(default_factory=list)


def _partition_bounds(namespace: str) -> dict[str, int]:
    """Deployment (or StatefulSet) name -> partitions of the topics its process consumes (stored KafkaTopics)."""
    settings = Settings()
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in kube.items("kafkatopics", "-n", namespace)}
    bounds = {}
    for dep in kube.workloads(namespace):
        module = dep["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        consumes = COMPONENTS[module].consumes
        if consumes:
            bounds[dep["metadata"]["name"]] = min(partitions[settings.topic(t)] for t in consumes)
    return bounds


def _observe(namespace: str, seen: dict[str, Seen], phase: str) -> None:
    now = time.monotonic()
    hpas = {h["metadata"]["name"]: h for h in kube.items("hpa", "-n", namespace)}
    for dep in kube.workloads(namespace):
        name = dep["metadata"]["name"]
        s, hpa = seen[name], hpas[name]
        n = dep["spec"]["replicas"]
        s.replicas.append(n)
        s.most = max(s.most, n)
        conds = kube.conditions(hpa)
        if n == s.high and s.at_max is None:
            s.at_max = now
        if phase == "up" and n == s.high:
            limited = conds.get("ScalingLimited", {})
            s.limited |= limited.get("status") == "True" and limited.get("reason") == "TooManyReplicas"
        if phase == "down":
            s.stabilized |= conds.get("AbleToScale", {}).get("reason") == "ScaleDownStabilized"
            if n < s.high and s.first_down is None:
                s.first_down = now


def _rescales(namespace: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ev in kube.events(namespace, "HorizontalPodAutoscaler"):
        if ev["reason"] == "SuccessfulRescale":
            out.setdefault(ev["involvedObject"]["name"], []).append(ev["message"])
    return out


def _outbox_volumes(namespace: str) -> dict[str, str]:
    """Bound outbox claims of the StatefulSet response -> their volumes."""
    return {c["metadata"]["name"]: c["spec"]["volumeName"] for c in kube.items("pvc", "-n", namespace)
            if c["metadata"]["name"].startswith("outbox-response-") and c["status"].get("phase") == "Bound"}


def test_every_hpa_scales_up_to_its_bound_and_down_after_the_window(applied):
    ns = applied["dev"].namespace
    kube.wait_for("every Deployment and StatefulSet available", lambda: all(
        kube.available(d) for d in kube.workloads(ns)), timeout=120)
    hpas = kube.items("hpa", "-n", ns)
    assert {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]) for h in hpas} == {
        (d["kind"], d["metadata"]["name"]) for d in kube.workloads(ns)}, "every workload has a CPU HPA here"
    for hpa in hpas:
        kube.kubectl("patch", "hpa", hpa["metadata"]["name"], "-n", ns, "--type=merge",
                     "-p", json.dumps({"spec": {"behavior": TEST_BEHAVIOR}}))
    seen = {h["metadata"]["name"]: Seen(h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) for h in hpas}
    bounds = _partition_bounds(ns)
    assert set(bounds) == {"stream-worker", "scraper-worker", "search-indexer"}

    # Load: every pod at 10x its CPU request (dev requests 50m), new pods included.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not all(s.at_max and s.limited for s in seen.values()):
        kube.annotate_pods(ns, USAGE, "500m")
        _observe(ns, seen, "up")
        time.sleep(2)
    not_up = {n: s.replicas[-5:] for n, s in seen.items() if not (s.at_max and s.limited)}
    assert not not_up, f"not at maxReplicas with ScalingLimited/TooManyReplicas: {not_up}"
    for _ in range(5):  # held at the bound while the load stays
        kube.annotate_pods(ns, USAGE, "500m")
        _observe(ns, seen, "up")
        time.sleep(2)
    up_events = _rescales(ns)
    kube.wait_for("every response replica on its claim", lambda: len(_outbox_volumes(ns)) == seen["response"].high,
                  timeout=60)
    volumes_up = _outbox_volumes(ns)

    # Idle: the replicas stay until the window has passed, then come back to minReplicas.
    kube.annotate_pods(ns, USAGE, "1m")
    dropped = time.monotonic()
    deadline = dropped + DOWN_WINDOW_S + 120
    while time.monotonic() < deadline and not all(s.replicas[-1] == s.low for s in seen.values()):
        _observe(ns, seen, "down")
        time.sleep(2)
    down_events = _rescales(ns)
    assert _outbox_volumes(ns) == volumes_up, "a scaled-down response replica's outbox claim or volume went"

    for name, s in seen.items():
        assert s.most <= s.high, f"{name}: {s.most} replicas > maxReplicas {s.high}"
        if name in bounds:
            assert s.high <= bounds[name] and s.most <= bounds[name], f"{name}: past its {bounds[name]} partitions"
        assert s.replicas[-1] == s.low, f"{name}: not back to {s.low}: {s.replicas[-10:]}"
        assert s.first_down is not None and s.first_down - dropped >= DOWN_WINDOW_S - HPA_SYNC_S, (
            f"{name}: scaled down {s.first_down - dropped:.0f} s after the load stopped, window {DOWN_WINDOW_S} s")
        assert s.stabilized, f"{name}: never reported AbleToScale/ScaleDownStabilized during the window"
        assert any(f"New size: {s.high}" in m and "above target" in m for m in up_events.get(name, [])), up_events
        assert any(f"New size: {s.low}" in m and "below target" in m for m in down_events.get(name, [])), down_events
