"""Both overlays applied to a live API server: every object accepted under strict field
validation, every Deployment Available and the StatefulSet response ready on kwok's simulated nodes,
each of its replicas on an outbox claim of its own (the cluster's default StorageClass), the policy
objects and custom resources stored, and a broken object refused by the server itself."""

from __future__ import annotations

import copy

import pytest

from deploy.kube.cluster import NODES
from tests.deploy.live import kube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
STORED_KINDS = {
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "KafkaTopic": "kafkatopics.kafka.strimzi.io",
    "ScaledObject": "scaledobjects.keda.sh",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_object_is_accepted_server_side(applied, overlay):
    done = applied[overlay]
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == len(done.docs), done.output
    assert all(line.endswith("serverside-applied") for line in lines), done.output


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_workload_is_available_on_kwok_nodes(applied, overlay):
    ns = applied[overlay].namespace
    names = {(d["kind"], d["metadata"]["name"]) for kind in ("Deployment", "StatefulSet")
             for d in applied[overlay].of_kind(kind)}
    assert ("StatefulSet", "response") in names

    def available():
        ok = {(d["kind"], d["metadata"]["name"]) for d in kube.workloads(ns) if kube.available(d)}
        return ok == names and ok

    kube.wait_for(f"every Deployment and StatefulSet of {ns} available", available, timeout=120)
    pods = kube.items("pods", "-n", ns)
    assert pods and all(p["spec"].get("nodeName") in NODES for p in pods)
    assert all(kube.conditions(p).get("Ready", {}).get("status") == "True" for p in pods
               if not p["metadata"].get("deletionTimestamp"))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_response_replica_has_its_own_bound_outbox_claim(applied, overlay):
    """The claims the StatefulSet made from its volumeClaimTemplate, one per ordinal, with no
    storageClassName in the manifest: the cluster's default class provisioned and bound them."""
    ns = applied[overlay].namespace
    kube.wait_for("response ready", lambda: kube.available(kube.get("statefulset", "response", "-n", ns)), timeout=120)
    replicas = kube.get("statefulset", "response", "-n", ns)["spec"]["replicas"]
    default = next(c["metadata"]["name"] for c in kube.items("storageclasses")
                   if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true")
    for ordinal in range(replicas):
        pod = kube.get("pod", f"response-{ordinal}", "-n", ns)
        claim_name = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if v["name"] == "outbox")
        assert claim_name == f"outbox-response-{ordinal}"
        claim = kube.wait_for(f"{claim_name} Bound", lambda n=claim_name: (
            c := kube.get("pvc", n, "-n", ns))["status"].get("phase") == "Bound" and c, timeout=60)
        assert claim["spec"]["storageClassName"] == default
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["status"]["capacity"]["storage"] == "1Gi"
    volumes = [kube.get("pvc", f"outbox-response-{i}", "-n", ns)["spec"]["volumeName"] for i in range(replicas)]
    assert len(set(volumes)) == replicas, f"replicas share a volume: {volumes}"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_policies_and_custom_resources_are_stored(applied, overlay):
    done = applied[overlay]
    for kind, resource in STORED_KINDS.items():
        expected = {d["metadata"]["name"] for d in done.of_kind(kind)}
        stored = {o["metadata"]["name"] for o in kube.items(resource, "-n", done.namespace)}
        assert expected <= stored, f"{kind}: {sorted(expected - stored)} not stored"
    if overlay == "prod":  # the KEDA variant: ScaledObjects for both consumers
        assert {d["metadata"]["name"] for d in done.of_kind("ScaledObject")} == {"stream-worker", "scraper-worker"}
        so = kube.get("scaledobjects.keda.sh", "stream-worker", "-n", done.namespace)
        assert so["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "80000"


def _deployment(docs):
    return copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "search"))


def _broken(docs, kind, name, change):
    doc = copy.deepcopy(next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)))
    doc["metadata"]["name"] = "broken-" + doc["metadata"]["name"]
    change(doc)
    return doc


BROKEN = {
    "misspelt container field": (
        "Deployment", "search",
        lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("containerPorts", []),
        "containerPorts: field not declared in schema"),
    "HPA field of autoscaling/v1": (
        "HorizontalPodAutoscaler", "search", lambda d: d["spec"].__setitem__("targetCPUUtilizationPercentage", 70),
        "spec.targetCPUUtilizationPercentage: field not declared in schema"),
    "KafkaTopic partitions as text": (
        "KafkaTopic", None, lambda d: d["spec"].__setitem__("partitions", "twelve"),
        "spec.partitions: expected numeric"),
    "ScaledObject lag threshold as a number": (
        "ScaledObject", "stream-worker",
        lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("lagThreshold", 8400),
        "lagThreshold: expected string"),
    "PodDisruptionBudget with both bounds": (
        "PodDisruptionBudget", "search", lambda d: d["spec"].__setitem__("minAvailable", 1),
        "minAvailable and maxUnavailable cannot be both set"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_object_is_refused_by_the_server(applied, case):
    kind, name, change, expected = BROKEN[case]
    done = applied["prod"]
    doc = _broken(done.docs, kind, name, change)
    result = kube.apply([doc], check=False)
    assert result.returncode != 0, f"{case}: accepted:\n{result.stdout}"
    assert expected in result.stderr, f"{case}: {result.stderr}"
    resource = STORED_KINDS.get(kind, kind.lower())
    missing = kube.kubectl("get", resource, doc["metadata"]["name"], "-n", done.namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr, f"{case}: stored anyway"
