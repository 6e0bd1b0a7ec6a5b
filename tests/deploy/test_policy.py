"""Policy of the rendered overlays, and proof that the policy catches broken manifests."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable

import pytest
import yaml

from services.common.grpc_server import port_of
from services.settings import Settings
from tests.deploy.manifests import K8S_DIR, OVERLAYS, kustomize_build
from tests.deploy.policy import COMPONENTS, SECRET_SETTINGS, WORKLOAD_KINDS, hpa_bounds, required_in_cluster, violations
from tests.deploy.policy_network import callers_in_code
from tests.deploy.policy_outbox import outbox_holders_in_code

Docs = list[dict]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_policy(rendered, secret_keys, overlay):
    found = violations(rendered[overlay].docs, secret_keys)
    assert not found, f"overlay {overlay}:\n" + "\n".join(found)


def test_overlays_set_namespace_image_bounds_and_resources(rendered):
    def namespaces(docs):
        return {d["metadata"].get("namespace") for d in docs if d["kind"] not in ("Namespace",)}

    def images(docs):
        return {c["image"] for d in docs if d["kind"] in WORKLOAD_KINDS for c in d["spec"]["template"]["spec"]["containers"]}

    def requests(docs):
        return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
                for d in docs if d["kind"] in WORKLOAD_KINDS}

    dev, prod = rendered["dev"].docs, rendered["prod"].docs
    assert namespaces(dev) == {"parley-dev"} and namespaces(prod) == {"parley"}
    assert images(dev) != images(prod)
    assert hpa_bounds(dev) != hpa_bounds(prod)
    assert requests(dev) != requests(prod)
    assert requests(dev)["response"] != requests(prod)["response"], "the overlays' patches reach the StatefulSet"
    assert all(low >= 2 for name, (low, _) in hpa_bounds(prod).items()), "prod keeps two of everything"


def test_no_overlay_lowers_a_memory_limit_below_the_bases(rendered):
    """The base's memory limits are sized for what the settings let each process hold; an overlay may
    shrink requests (a small cluster), not the limits."""
    def memory(docs) -> dict[str, float]:
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
        out = {}
        for d in docs:
            if d["kind"] in WORKLOAD_KINDS:
                limit = d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
                out[d["metadata"]["name"]] = float(limit[:-2]) * units[limit[-2:]]
        return out

    base = memory(yaml.safe_load_all("\n---\n".join(
        p.read_text() for name in ("deployment", "statefulset")
        for p in sorted((K8S_DIR / "base").glob(f"*/{name}.yaml")))))
    for overlay in ("dev", "prod"):
        lowered = {name: (limit, base[name]) for name, limit in memory(rendered[overlay].docs).items()
                   if limit < base[name]}
        assert not lowered, (overlay, lowered)


def test_secret_example_names_every_secret_with_placeholders_only(secret_example):
    values = secret_example["stringData"]
    assert set(values) == set(SECRET_SETTINGS)
    for key, value in values.items():
        assert value == "" or "REPLACE" in value, f"{key} in secret.example.yaml must be a placeholder"


def test_base_configmap_ports_are_the_settings_defaults():
    """Ports stay the ones of the local stack (README), so the ConfigMap and the code agree."""
    env = dict(
        line.split("=", 1)
        for line in (K8S_DIR / "base" / "config" / "settings.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    defaults = Settings.model_fields
    for field in ("search_addr", "response_addr", "scraper_addr", "analytics_addr"):
        assert port_of(env[f"PARLEY_{field.upper()}"]) == port_of(defaults[field].default), field
    for field in defaults:
        if field.endswith("_metrics_port"):
            assert int(env[f"PARLEY_{field.upper()}"]) == defaults[field].default, field
    assert float(env["PARLEY_SHUTDOWN_GRACE_SECONDS"]) == defaults["shutdown_grace_seconds"].default


def test_settings_without_a_safe_default_for_a_cluster_are_known():
    required = set(required_in_cluster())
    assert {"PARLEY_KAFKA_BOOTSTRAP", "PARLEY_POSTGRES_DSN", "PARLEY_REDIS_URL", "PARLEY_GRPC_BIND_HOST",
            "PARLEY_SEARCH_ADDR", "PARLEY_RESPONSE_ADDR", "PARLEY_SCRAPER_ADDR", "PARLEY_ANALYTICS_ADDR",
            "PARLEY_ADMIN_TOKEN"} <= required


# --- a broken manifest makes the policy fail ------------------------------------------------------

def _get(docs: Docs, kind: str, name: str | None = None) -> dict:
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name)))


def _workload(docs: Docs, name: str) -> dict:
    return next(d for d in docs if d["kind"] in WORKLOAD_KINDS and d["metadata"]["name"] == name)


def _container(docs: Docs, name: str) -> dict:
    return _workload(docs, name)["spec"]["template"]["spec"]["containers"][0]


def _response(docs: Docs) -> dict:
    return _get(docs, "StatefulSet", "response")["spec"]


def _outbox_on_empty_dir(docs: Docs) -> None:
    spec = _response(docs)
    spec.pop("volumeClaimTemplates")
    spec["template"]["spec"]["volumes"].append({"name": "outbox", "emptyDir": {"sizeLimit": "512Mi"}})


def _response_as_deployment(docs: Docs) -> None:
    _outbox_on_empty_dir(docs)
    sts = _get(docs, "StatefulSet", "response")
    sts["kind"] = "Deployment"
    for field in ("serviceName", "podManagementPolicy", "persistentVolumeClaimRetentionPolicy", "updateStrategy"):
        sts["spec"].pop(field)
    _get(docs, "HorizontalPodAutoscaler", "response")["spec"]["scaleTargetRef"]["kind"] = "Deployment"


def _scaled(docs: Docs, name: str) -> dict:
    return _get(docs, "ScaledObject", name)["spec"]


def _np_rules(docs: Docs, name: str) -> list[dict]:
    return _get(docs, "NetworkPolicy", name)["spec"]["ingress"]


def _hpa_for_stream_worker(docs: Docs) -> None:
    hpa = copy.deepcopy(_get(docs, "HorizontalPodAutoscaler", "search"))
    hpa["metadata"]["name"] = "stream-worker"
    hpa["spec"]["scaleTargetRef"]["name"] = "stream-worker"
    docs.append(hpa)


def _config(docs: Docs) -> dict:
    return _get(docs, "ConfigMap", "parley-settings")["data"]


BROKEN: dict[str, tuple[Callable[[Docs], object], str]] = {
    "Deployment without autoscaler": (
        lambda d: d.remove(_get(d, "ScaledObject", "stream-worker")),
        "Deployment stream-worker has no autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject)"),
    "HPA and ScaledObject on one Deployment": (
        _hpa_for_stream_worker, "is targeted by 1 HorizontalPodAutoscalers and 1 ScaledObjects"),
    "worker ScaledObject above the partitions": (
        lambda d: _scaled(d, "stream-worker").update(maxReplicaCount=13),
        "maxReplicaCount 13 > 12 partitions of parley.chat.turns.v1, parley.feedback.v1"),
    "crawl worker ScaledObject above the partitions": (
        lambda d: _scaled(d, "scraper-worker").update(maxReplicaCount=20),
        "maxReplicaCount 20 > 12 partitions of parley.crawl.requests.v1"),
    "worker ScaledObject without scale-down window": (
        lambda d: _scaled(d, "stream-worker")["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        .pop("stabilizationWindowSeconds"), "stabilizationWindowSeconds >= 300"),
    "lag of another consumer group": (
        lambda d: _scaled(d, "scraper-worker")["triggers"][0]["metadata"].update(consumerGroup="parley-analytics"),
        "is not the worker's group 'parley-crawler'"),
    "stream worker on Faust's group, not its own consumer's": (
        lambda d: [t["metadata"].update(consumerGroup="parley-analytics")
                   for t in _scaled(d, "stream-worker")["triggers"]],
        "consumerGroup 'parley-analytics' is not the worker's group 'parley-analytics-events'"),
    "lag threshold not from the measured rate": (
        lambda d: _scaled(d, "stream-worker")["triggers"][0]["metadata"].update(lagThreshold="100000"),
        "lagThreshold 100000 != 40000 events/s x 2 s = 80000"),
    "lag of one consumed topic unwatched": (
        lambda d: _scaled(d, "stream-worker")["triggers"].pop(), "the worker consumes"),
    "idle consumers allowed": (
        lambda d: _scaled(d, "stream-worker")["triggers"][0]["metadata"].update(allowIdleConsumers="true"),
        "allowIdleConsumers must be"),
    "lag scaler on another Kafka": (
        lambda d: _scaled(d, "stream-worker")["triggers"][1]["metadata"].update(bootstrapServers="other:9092"),
        "!= PARLEY_KAFKA_BOOTSTRAP"),
    "no default-deny NetworkPolicy": (
        lambda d: d.remove(_get(d, "NetworkPolicy", "default-deny-ingress")), "no default-deny NetworkPolicy"),
    "metrics port open to every pod": (
        lambda d: _np_rules(d, "search")[1].pop("from"), "port metrics is open to ['anything']"),
    "a caller in the code without a policy": (
        lambda d: _np_rules(d, "scraper")[0]["from"].pop(0),
        "Deployment scraper: gRPC reachable by"),
    "a policy without a caller in the code": (
        lambda d: _np_rules(d, "search")[0]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "analytics"}}}),
        "Deployment search: gRPC reachable by"),
    "Prometheus on a gRPC port": (
        lambda d: _np_rules(d, "analytics")[0]["from"].append(
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}),
        "Deployment analytics: gRPC reachable by"),
    "a worker reachable on another port": (
        lambda d: _np_rules(d, "stream-worker").append(
            {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "response"}}}],
             "ports": [{"port": 6066}]}), "port 6066 is open to"),
    "every port of a service open": (
        lambda d: _np_rules(d, "response").append({"from": [{"podSelector": {}}]}), "all ports is open to"),
    "HPA without behavior": (
        lambda d: _get(d, "HorizontalPodAutoscaler", "search")["spec"].pop("behavior"), "behavior must set"),
    "no readiness probe": (lambda d: _container(d, "search").pop("readinessProbe"), "no readinessProbe"),
    "no liveness probe on the worker": (lambda d: _container(d, "stream-worker").pop("livenessProbe"),
                                        "no livenessProbe"),
    "gRPC probe on another port": (
        lambda d: _container(d, "search")["livenessProbe"]["grpc"].update(port=50052),
        "livenessProbe gRPC port 50052 != port of PARLEY_SEARCH_ADDR"),
    "HTTP probe instead of gRPC": (
        lambda d: _container(d, "response").update(
            readinessProbe={"httpGet": {"path": "/metrics", "port": "metrics"}}),
        "readinessProbe must be a native gRPC probe"),
    "container port not the setting": (
        lambda d: _container(d, "analytics")["ports"][0].update(containerPort=8080),
        "containerPort grpc 8080 != port of PARLEY_ANALYTICS_ADDR"),
    "metrics port setting changed alone": (
        lambda d: _config(d).update(PARLEY_WORKER_METRICS_PORT="9999"),
        "containerPort metrics 9105 != PARLEY_WORKER_METRICS_PORT"),
    "no limits": (lambda d: _container(d, "response")["resources"].pop("limits"), "no cpu limits"),
    "no requests": (lambda d: _container(d, "scraper")["resources"].pop("requests"), "no memory requests"),
    "root user": (
        lambda d: _get(d, "Deployment", "analytics")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
        "must run as non-root"),
    "writable root filesystem": (
        lambda d: _container(d, "search")["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem must be true"),
    "replicas fixed in the Deployment": (
        lambda d: _get(d, "Deployment", "search")["spec"].update(replicas=3), "sets spec.replicas"),
    "replicas fixed in the StatefulSet": (
        lambda d: _response(d).update(replicas=3), "StatefulSet response: sets spec.replicas"),
    "grace period shorter than the drain": (
        lambda d: _get(d, "Deployment", "search")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
        "does not cover the drain"),
    "Kafka endpoint missing": (lambda d: _config(d).pop("PARLEY_KAFKA_BOOTSTRAP"),
                               "PARLEY_KAFKA_BOOTSTRAP is provided by neither"),
    "loopback bind host": (lambda d: _config(d).update(PARLEY_GRPC_BIND_HOST="127.0.0.1"), "must be 0.0.0.0"),
    "secret in the ConfigMap": (lambda d: _config(d).update(PARLEY_ADMIN_TOKEN="hunter2"), "is a secret"),
    "misspelt setting": (lambda d: _config(d).update(PARLEY_KAFKA_BOOTSTRAPS="x:9092"), "is no setting"),
    "Secret committed": (
        lambda d: d.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "parley-secrets"},
                            "stringData": {"PARLEY_ADMIN_TOKEN": "hunter2"}}),
        "secret values are never committed"),
    "topic partitions not the setting": (
        lambda d: _get(d, "KafkaTopic", "parley-chat-turns")["spec"].update(partitions=6),
        "partitions 6 != PARLEY_TOPIC_PARTITIONS 12"),
    "topic retention not the project's": (
        lambda d: _get(d, "KafkaTopic", "parley-chat-turns")["spec"]["config"].update({"retention.ms": "86400000"}),
        "retention.ms '86400000' != '604800000'"),
    "topic missing": (lambda d: d.remove(_get(d, "KafkaTopic", "parley-deadletter")),
                      "parley.deadletter.v1 has no KafkaTopic"),
    "no PodDisruptionBudget": (lambda d: d.remove(_get(d, "PodDisruptionBudget", "scraper")),
                               "Deployment scraper has no PodDisruptionBudget"),
    "image without tag": (lambda d: _container(d, "search").update(image="parley"), "one Parley image"),
    # The response outbox: acknowledged events on a claim of each replica's own.
    "outbox on an emptyDir": (_outbox_on_empty_dir, "StatefulSet response: keeps its outbox (PARLEY_OUTBOX_DIR "
                              "/var/lib/parley/outbox) on the emptyDir outbox"),
    "outbox holder back to a Deployment": (
        _response_as_deployment, "Deployment response runs `python -m services.response`, which holds acknowledged "
                                 "events in its outbox: run it as a StatefulSet"),
    "outbox directory outside the claim": (
        lambda d: _container(d, "response")["env"][0].update(value="/tmp/outbox"),
        "keeps its outbox (PARLEY_OUTBOX_DIR /tmp/outbox) on the emptyDir tmp"),
    "outbox directory on no volume": (
        lambda d: [e.update(value="/var/lib/outbox") for e in _container(d, "response")["env"]
                   if e["name"] == "PARLEY_OUTBOX_DIR"], "PARLEY_OUTBOX_DIR '/var/lib/outbox' is on no volume"),
    "outbox claim without headroom": (
        lambda d: _response(d)["volumeClaimTemplates"][0]["spec"]["resources"]["requests"].update(storage="400Mi"),
        "the outbox claim outbox requests 400Mi < 1.5 x PARLEY_OUTBOX_MAX_BYTES (335544320) = 480Mi"),
    "outbox larger than its claim allows": (
        lambda d: [e.update(value=str(1 << 30)) for e in _container(d, "response")["env"]
                   if e["name"] == "PARLEY_OUTBOX_MAX_BYTES"], "requests 1Gi < 1.5 x PARLEY_OUTBOX_MAX_BYTES"),
    "outbox claim shared by many writers": (
        lambda d: _response(d)["volumeClaimTemplates"][0]["spec"].update(accessModes=["ReadWriteMany"]),
        "the outbox claim outbox must be ReadWriteOnce"),
    "claims deleted on scale-down": (
        lambda d: _response(d)["persistentVolumeClaimRetentionPolicy"].update(whenScaled="Delete"),
        "persistentVolumeClaimRetentionPolicy.whenScaled Delete deletes the claims"),
    "claims deleted with the StatefulSet": (
        lambda d: _response(d)["persistentVolumeClaimRetentionPolicy"].update(whenDeleted="Delete"),
        "persistentVolumeClaimRetentionPolicy.whenDeleted Delete deletes the claims"),
    "one ordinal at a time": (
        lambda d: _response(d).update(podManagementPolicy="OrderedReady"), "podManagementPolicy must be Parallel"),
    "no governing Service": (
        lambda d: d.remove(_get(d, "Service", "response-headless")),
        "serviceName 'response-headless' names no Service"),
    "governing Service with a cluster IP": (
        lambda d: _get(d, "Service", "response-headless")["spec"].pop("clusterIP"), "must be headless"),
    "HPA still on the Deployment": (
        lambda d: _get(d, "HorizontalPodAutoscaler", "response")["spec"]["scaleTargetRef"].update(kind="Deployment"),
        "HorizontalPodAutoscaler response: targets Deployment response, which is not in the manifests"),
    "response without its NetworkPolicy rule": (
        lambda d: _np_rules(d, "response")[0]["from"].pop(0), "StatefulSet response: gRPC reachable by"),
    "no PodDisruptionBudget for the StatefulSet": (
        lambda d: d.remove(_get(d, "PodDisruptionBudget", "response")),
        "StatefulSet response has no PodDisruptionBudget"),
}


# The dev overlay scales the workers with plain CPU HPAs (components/cpu-autoscaling).
BROKEN_DEV: dict[str, tuple[Callable[[Docs], object], str]] = {
    "worker HPA above the partitions": (
        lambda d: _get(d, "HorizontalPodAutoscaler", "stream-worker")["spec"].update(maxReplicas=5),
        "maxReplicas 5 > 4 partitions"),
    "crawl worker HPA above the partitions": (
        lambda d: _get(d, "HorizontalPodAutoscaler", "scraper-worker")["spec"].update(maxReplicas=8),
        "maxReplicas 8 > 4 partitions of parley.crawl.requests.v1"),
    "worker HPA without scale-down window": (
        lambda d: _get(d, "HorizontalPodAutoscaler", "stream-worker")["spec"]["behavior"]["scaleDown"]
        .pop("stabilizationWindowSeconds"), "stabilizationWindowSeconds >= 300"),
    "Deployment without HPA": (
        lambda d: d.remove(_get(d, "HorizontalPodAutoscaler", "scraper-worker")),
        "Deployment scraper-worker has no autoscaler"),
}


@pytest.mark.parametrize("case", list(BROKEN_DEV))
def test_policy_reports_a_broken_dev_manifest(rendered, secret_keys, case):
    break_it, expected = BROKEN_DEV[case]
    docs = copy.deepcopy(rendered["dev"].docs)
    break_it(docs)
    found = violations(docs, secret_keys)
    assert any(expected in line for line in found), f"{case}: expected {expected!r} in {found}"


@pytest.mark.parametrize("case", list(BROKEN))
def test_policy_reports_a_broken_manifest(rendered, secret_keys, case):
    break_it, expected = BROKEN[case]
    docs = copy.deepcopy(rendered["prod"].docs)
    break_it(docs)
    found = violations(docs, secret_keys)
    assert any(expected in line for line in found), f"{case}: expected {expected!r} in {found}"


def test_a_broken_tree_fails_from_kustomize_build_on(tmp_path, secret_keys):
    """The whole path on a copy of deploy/k8s whose stream worker lost its ScaledObject."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, tree)
    kustomization = tree / "base" / "stream-worker" / "kustomization.yaml"
    content = yaml.safe_load(kustomization.read_text())
    content["resources"].remove("scaledobject.yaml")
    kustomization.write_text(yaml.safe_dump(content))
    # The prod overlay patches that ScaledObject's bounds: without it, the patch has no target.
    prod_hpa = tree / "overlays" / "prod" / "hpa.yaml"
    prod_hpa.write_text("\n---\n".join(
        yaml.safe_dump(d) for d in yaml.safe_load_all(prod_hpa.read_text()) if d["metadata"]["name"] != "stream-worker"
    ))
    found = violations(kustomize_build(tree / "overlays" / "prod"), secret_keys)
    assert ("Deployment stream-worker has no autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject) that targets it"
            in found)


def test_outbox_holders_are_read_from_the_code():
    """The components whose acknowledged events wait in an outbox: the response service (turns and
    feedback). The scraper API answers StartCrawl only once the broker acknowledged its crawl request,
    and keeps no outbox."""
    assert outbox_holders_in_code(tuple(COMPONENTS)) == {"services.response"}


def test_callers_are_read_from_the_code():
    """The call graph the NetworkPolicies are checked against: the known calls are found."""
    callers = callers_in_code(tuple(COMPONENTS))
    assert callers["services.search"] == {"services.response", "services.cli"}
    assert callers["services.scraper"] == {"services.search", "services.response", "services.cli"}
    assert "services.cli" in callers["services.analytics"] and "services.cli" in callers["services.response"]
