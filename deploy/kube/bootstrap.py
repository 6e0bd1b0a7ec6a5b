"""What the fresh control plane needs before the manifests: kwok's simulated nodes and metrics,
the CRDs the manifests use (Strimzi, KEDA), metrics-server registered as the metrics API, and a
default StorageClass for the manifests' volume claims."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from deploy.kube.cluster import kubectl

# Pod CPU and memory as kwok reports them to metrics-server: the pod's annotation when set (a test
# sets `kwok.x-k8s.io/usage-cpu: 400m` to load a pod), else next to nothing. kwok's own example.
USAGE_FROM_ANNOTATION = {
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "ClusterResourceUsage",
    "metadata": {"name": "usage-from-annotation"},
    "spec": {"usages": [{"usage": {
        "cpu": {"expression": '"kwok.x-k8s.io/usage-cpu" in pod.metadata.annotations'
                              ' ? Quantity(pod.metadata.annotations["kwok.x-k8s.io/usage-cpu"]) : Quantity("1m")'},
        "memory": {"expression": '"kwok.x-k8s.io/usage-memory" in pod.metadata.annotations'
                                 ' ? Quantity(pod.metadata.annotations["kwok.x-k8s.io/usage-memory"]) : Quantity("1Mi")'},
    }}]},
}
NODE_CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110"}
# The cluster's default class, as a cloud's is: a claim without storageClassName (the response outbox's)
# gets it, and the controller-manager's hostPath provisioner (cluster.STORAGE_FLAGS) makes its volume
# once the scheduler has placed the pod, as zonal block storage does.
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "WaitForFirstConsumer",
}


def write_kwok_config(path: Path, kwok_dir: Path) -> None:
    """kwok's configuration: its kubelet-style /metrics/resource endpoint (shipped with kwok,
    copied next to the binary by `make k8s-tools`) and the usage rule above."""
    metric = (kwok_dir / "metrics-resource.yaml").read_text()
    path.write_text(metric.rstrip() + "\n---\n" + yaml.safe_dump(USAGE_FROM_ANNOTATION, sort_keys=False))


def _node(name: str, zone: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": zone},
            # All nodes share kwok's one endpoint: metrics-server asks for each node's own path.
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                            "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource"},
        },
        "status": {"allocatable": NODE_CAPACITY, "capacity": NODE_CAPACITY},
    }


def _metrics_api(port: int) -> list[dict]:
    # No kube-proxy here: the APIService's Service is an ExternalName for this machine.
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "metrics-server", "namespace": "kube-system"},
         "spec": {"type": "ExternalName", "externalName": "localhost",
                  "ports": [{"name": "https", "port": port, "targetPort": port, "protocol": "TCP"}]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                  "versionPriority": 100, "insecureSkipTLSVerify": True,
                  "service": {"name": "metrics-server", "namespace": "kube-system", "port": port}}},
    ]


def apply(metrics_port: int, crds: Iterable[Path], nodes: Iterable[str], zones: Iterable[str]) -> None:
    for crd in crds:
        kubectl("apply", "--server-side", "-f", str(crd))
    docs = [_node(n, z) for n, z in zip(nodes, zones, strict=True)] + _metrics_api(metrics_port) + [STORAGE_CLASS]
    kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs, sort_keys=False))


def _conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}


def _items(*args: str) -> list[dict]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)["items"]


def nodes_ready() -> bool:
    nodes = _items("nodes", "-l", "type=kwok")
    return bool(nodes) and all(_conditions(n).get("Ready") == "True" for n in nodes)


def crds_established() -> bool:
    crds = _items("crd")
    return len(crds) >= 3 and all(_conditions(c).get("Established") == "True" for c in crds)


def metrics_available() -> bool:
    svc = json.loads(kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json").stdout)
    return _conditions(svc).get("Available") == "True"
