"""Helpers of the live stage: apply, read and wait on objects through the pinned kubectl."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import yaml

from deploy.kube.cluster import KubeError, kubectl
from tests.deploy.manifests import K8S_DIR

Doc = dict[str, Any]
FIELD_MANAGER = "parley-live-test"


@dataclass
class Applied:
    namespace: str
    docs: list[Doc]
    output: str

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]


def namespace_of(docs: list[Doc]) -> str:
    return next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")


def apply(docs: list[Doc], *extra: str, check: bool = True):
    return kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--validate=strict", *extra,
                   "-f", "-", input=yaml.safe_dump_all(docs, sort_keys=False), check=check)


def apply_overlay(docs: list[Doc]) -> Applied:
    ns = namespace_of(docs)
    result = apply(docs)
    secret = yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())
    secret["metadata"]["namespace"] = ns
    apply([secret])
    return Applied(ns, docs, result.stdout)


def get(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def items(*args: str) -> list[Doc]:
    return get(*args)["items"]


def workloads(namespace: str) -> list[Doc]:
    """The Deployments and StatefulSets of the namespace (the pods of every component)."""
    return items("deployments,statefulsets", "-n", namespace)


def available(workload: Doc) -> bool:
    """A Deployment Available, or a StatefulSet with every replica ready and of its current revision."""
    status = workload.get("status", {})
    if workload["kind"] == "StatefulSet":
        want = workload["spec"].get("replicas", 1)
        return (status.get("observedGeneration") == workload["metadata"]["generation"]
                and status.get("readyReplicas", 0) == want >= 1 and status.get("updatedReplicas", 0) == want
                and status.get("currentRevision") == status.get("updateRevision"))
    return conditions(workload).get("Available", {}).get("status") == "True" and status.get("availableReplicas", 0) >= 1


def conditions(obj: Doc) -> dict[str, Doc]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def events(namespace: str, kind: str) -> list[Doc]:
    return items("events", "-n", namespace, "--field-selector", f"involvedObject.kind={kind}")


def annotate_pods(namespace: str, key: str, value: str) -> None:
    kubectl("annotate", "pods", "--all", "-n", namespace, f"{key}={value}", "--overwrite")


__all__ = ["Applied", "KubeError", "annotate_pods", "apply", "apply_overlay", "available", "conditions", "events",
           "get", "items", "namespace_of", "wait_for", "workloads"]
