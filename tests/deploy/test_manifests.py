"""kustomize builds every overlay, and every object is valid for the pinned Kubernetes version."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.manifests import (
    K8S_DIR,
    KUBERNETES_VERSION,
    OVERLAYS,
    KustomizeMissing,
    kustomize_binary,
    kustomize_build,
    schema_errors,
)


def test_kustomize_is_installed():
    try:
        kustomize_binary()
    except KustomizeMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_kind(rendered, overlay):
    kinds = {d["kind"] for d in rendered[overlay].docs}
    assert {"Namespace", "ConfigMap", "ServiceAccount", "Service", "Deployment", "StatefulSet",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "KafkaTopic", "NetworkPolicy"} <= kinds
    # Production scales the Kafka consumers with KEDA; dev (no KEDA) with CPU HPAs only.
    assert ("ScaledObject" in kinds) == (overlay == "prod")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_match_the_kubernetes_schemas(rendered, overlay):
    errors = schema_errors(rendered[overlay].docs)
    assert not errors, f"overlay {overlay} against Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(errors)


def test_base_objects_match_the_kubernetes_schemas():
    errors = schema_errors(kustomize_build(K8S_DIR / "base"))
    assert not errors, "\n".join(errors)


def _first(docs, kind, name=None):
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def _search_container(docs):
    return _first(docs, "Deployment", "search")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("what", "break_it", "expected"),
    [
        ("misspelt container field",
         lambda docs: _search_container(docs).__setitem__("containerPorts", []), "containerPorts"),
        ("probe port as a name where gRPC needs a number",
         lambda docs: _search_container(docs)["readinessProbe"]["grpc"].__setitem__("port", "grpc"),
         "readinessProbe.grpc.port"),
        ("HPA field of autoscaling/v1",
         lambda docs: _first(docs, "HorizontalPodAutoscaler")["spec"].__setitem__("targetCPUUtilizationPercentage", 70),
         "targetCPUUtilizationPercentage"),
        ("KafkaTopic partitions as text",
         lambda docs: _first(docs, "KafkaTopic")["spec"].__setitem__("partitions", "twelve"), "partitions"),
        ("ScaledObject field misspelt",
         lambda docs: _first(docs, "ScaledObject")["spec"].__setitem__("maxReplicas", 4), "maxReplicas"),
        ("ScaledObject lag threshold as a number (KEDA's metadata are strings)",
         lambda docs: _first(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"].__setitem__("lagThreshold", 8400),
         "spec.triggers.0.metadata.lagThreshold"),
        ("NetworkPolicy port as a list",
         lambda docs: _first(docs, "NetworkPolicy", "search")["spec"]["ingress"][0].__setitem__("ports", "grpc"),
         "spec.ingress.0.ports"),
        ("kind without a schema",
         lambda docs: docs.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
         "Couldn't find schema for kind Widget"),
    ],
)
def test_schema_validation_catches_a_broken_object(rendered, what, break_it, expected):
    docs = copy.deepcopy(rendered["prod"].docs)
    before = copy.deepcopy(docs)
    break_it(docs)
    broken = [d for d in docs if d not in before]  # only the object that changed: fast
    errors = schema_errors(broken)
    assert any(expected in e for e in errors), f"{what}: {errors}"
