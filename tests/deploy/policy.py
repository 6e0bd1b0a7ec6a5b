"""Policy of Parley's Kubernetes manifests: what every rendered overlay must satisfy.

`violations(docs, secret_keys)` takes the objects of one `kustomize build` and the keys that the
Secret parley-secrets provides (deploy/k8s/secret.example.yaml), and returns one readable line per
broken rule; an empty list means the overlay passes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from pydantic import ValidationError

from services.common.grpc_server import DRAIN_QUIET_MAX_SECONDS, STOP_SECONDS, port_of
from services.common.settings import TOPIC_CONFIGS
from services.settings import TOPICS, Settings
from tests.deploy.policy_keda import scaled_object_violations
from tests.deploy.policy_network import network_violations
from tests.deploy.policy_outbox import container_env, outbox_holders_in_code, outbox_violations, statefulset_violations

Doc = dict[str, Any]

SETTINGS_CONFIGMAP = "parley-settings"
SECRET_NAME = "parley-secrets"
# Settings that are secrets: only ever in the Secret, never in the ConfigMap.
SECRET_SETTINGS = ("PARLEY_POSTGRES_DSN", "PARLEY_ADMIN_TOKEN", "GROQ_API_KEY")
LOCAL_ONLY = ("127.0.0.1", "localhost", "[::1]")
ANY_INTERFACE = ("0.0.0.0", "::", "[::]")
# Rolling back a consumer group is a rebalance: wait this long before scaling workers down.
MIN_CONSUMER_SCALE_DOWN_WINDOW = 300
DRAIN_MARGIN_SECONDS = 3


@dataclass(frozen=True)
class Component:
    """What a `python -m <module>` process needs from its Deployment (or StatefulSet)."""

    addr_field: str | None      # gRPC address setting (servers only)
    metrics_field: str          # Prometheus port setting
    consumes: tuple[str, ...]   # TOPICS keys it consumes as a consumer group (bounded by partitions)
    # Besides the preStop pause and PARLEY_SHUTDOWN_GRACE_SECONDS, what its stop may take as bounded in
    # its code: a gRPC server refuses new calls for a moment and closes its clients (ServiceSpec.stop_seconds);
    # a worker closes its consumer, dead letters and producer.
    stop_seconds: float


_SERVER_STOP = DRAIN_QUIET_MAX_SECONDS + STOP_SECONDS
COMPONENTS: dict[str, Component] = {
    "services.search": Component("search_addr", "search_metrics_port", (), _SERVER_STOP),
    "services.response": Component("response_addr", "response_metrics_port", (), _SERVER_STOP),
    "services.scraper": Component("scraper_addr", "scraper_metrics_port", (), _SERVER_STOP),
    "services.analytics": Component("analytics_addr", "analytics_metrics_port", (), _SERVER_STOP),
    "services.scraper.worker": Component(None, "crawler_metrics_port", ("crawl_requests",), 15),
    "services.search.indexer": Component(None, "indexer_metrics_port", ("knowledge_pages",), 20),
    "services.analytics.stream": Component(None, "worker_metrics_port", ("chat_turns", "feedback"), 10),
}
# The kinds that run a component's pods.
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# One-shot commands allowed in init containers: the schema only, since a pod must start while Kafka
# is away (the topics are KafkaTopic resources).
INIT_COMMANDS = (["python", "-m", "services.cli", "migrate", "--schema-only"],)


def env_names() -> dict[str, str]:
    """Environment variable -> Settings field, for every field (aliases included)."""
    names = {}
    prefix = Settings.model_config.get("env_prefix", "")
    for field, info in Settings.model_fields.items():
        names[f"{prefix}{field}".upper()] = field
        alias = info.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names[choice.upper()] = field
    return names


def required_in_cluster() -> list[str]:
    """Settings whose defaults only work on one machine (local endpoints, loopback bind host,
    the dev admin token): the ConfigMap or the Secret must provide each of them."""
    prefix = Settings.model_config.get("env_prefix", "")
    required = []
    for field, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, str) and any(local in default for local in LOCAL_ONLY):
            required.append(f"{prefix}{field}".upper())
    required += ["PARLEY_ADMIN_TOKEN", "PARLEY_POSTGRES_DSN"]
    return sorted(set(required))


@contextmanager
def _only_env(env: dict[str, str]) -> Iterator[None]:
    base = {k: v for k, v in os.environ.items() if k.upper() not in env_names()}
    with mock.patch.dict(os.environ, {**base, **env}, clear=True):
        yield


def load_settings(env: dict[str, str]) -> Settings:
    """Settings as a pod sees them with exactly `env` (the ConfigMap + the Secret)."""
    with _only_env(env):
        return Settings()


def _containers(dep: Doc, init: bool = True) -> list[Doc]:
    spec = dep["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def _module(container: Doc) -> str | None:
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if len(cmd) == 3 and cmd[0] == "python" and cmd[1] == "-m":
        return cmd[2]
    return None


def _port(container: Doc, name: str) -> int | None:
    for port in container.get("ports", []):
        if port.get("name") == name:
            return port.get("containerPort")
    return None


def _probe_port(container: Doc, probe: Doc) -> int | None:
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind].get("port")
            return _port(container, port) if isinstance(port, str) else port
    return None


def _pre_stop_seconds(container: Doc) -> float:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"].get("seconds", 0))
    cmd = (pre_stop.get("exec") or {}).get("command") or []
    if len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    return 0.0


def _matches(selector: Doc, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def violations(docs: list[Doc], secret_keys: set[str]) -> list[str]:
    found: list[str] = []
    out = found.append
    by_kind: dict[str, list[Doc]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    # Deployments, and StatefulSets where a component keeps state of its own (the response outbox).
    workloads = [d for kind in WORKLOAD_KINDS for d in by_kind.get(kind, [])]
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    scaled_objects = by_kind.get("ScaledObject", [])
    topics = by_kind.get("KafkaTopic", [])

    # --- settings: the ConfigMap and the Secret every pod reads -------------------------------
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    settings_cm = next(
        (d for n, d in configmaps.items() if n == SETTINGS_CONFIGMAP or n.startswith(SETTINGS_CONFIGMAP + "-")), None
    )
    if settings_cm is None:
        return [f"no ConfigMap {SETTINGS_CONFIGMAP}: the pods would run with the local defaults"]
    config = {k: str(v) for k, v in (settings_cm.get("data") or {}).items()}
    for secret in by_kind.get("Secret", []):
        out(f"Secret {secret['metadata']['name']} is in the manifests: secret values are never committed "
            f"(create {SECRET_NAME} as deploy/k8s/secret.example.yaml shows)")
    known = env_names()
    for key in config:
        if key not in known:
            out(f"ConfigMap {SETTINGS_CONFIGMAP}: {key} is no setting of services.settings.Settings")
        if key in SECRET_SETTINGS:
            out(f"ConfigMap {SETTINGS_CONFIGMAP}: {key} is a secret; it belongs in the Secret {SECRET_NAME}")
    for key in secret_keys:
        if key not in known:
            out(f"Secret {SECRET_NAME}: {key} is no setting of services.settings.Settings")
    provided = set(config) | set(secret_keys)
    for key in required_in_cluster():
        if key not in provided:
            out(f"setting {key} is provided by neither the ConfigMap nor the Secret (its default only works locally)")
        elif any(local in config.get(key, "") for local in LOCAL_ONLY):
            out(f"ConfigMap {SETTINGS_CONFIGMAP}: {key}={config[key]} points at the pod itself")
    if config.get("PARLEY_GRPC_BIND_HOST") not in ANY_INTERFACE:
        out(f"ConfigMap {SETTINGS_CONFIGMAP}: PARLEY_GRPC_BIND_HOST must be 0.0.0.0 in a pod "
            f"(is {config.get('PARLEY_GRPC_BIND_HOST')!r}); probes and Services reach the pod's IP")
    # What a pod's environment holds: the ConfigMap and the Secret (placeholders for its values).
    pod_env = {**config, **{k: "placeholder" for k in secret_keys},
               "PARLEY_POSTGRES_DSN": "postgresql://u:p@postgres:5432/parley"}
    try:
        settings = load_settings(pod_env)
    except ValidationError as exc:
        return found + [f"ConfigMap {SETTINGS_CONFIGMAP} does not make valid Settings: {exc}"]

    # --- Kafka topics -------------------------------------------------------------------------
    topic_partitions: dict[str, int] = {}
    for topic in topics:
        spec = topic["spec"]
        name = spec.get("topicName", topic["metadata"]["name"])
        topic_partitions[name] = spec.get("partitions", 0)
        if spec.get("partitions") != settings.topic_partitions:
            out(f"KafkaTopic {name}: partitions {spec.get('partitions')} != PARLEY_TOPIC_PARTITIONS "
                f"{settings.topic_partitions}")
        if spec.get("replicas") != settings.topic_replication:
            out(f"KafkaTopic {name}: replicas {spec.get('replicas')} != PARLEY_TOPIC_REPLICATION "
                f"{settings.topic_replication}")
        retention = str((spec.get("config") or {}).get("retention.ms", ""))
        if not retention.isdigit() or int(retention) <= 0:
            out(f"KafkaTopic {name}: no retention.ms")
        min_isr = (spec.get("config") or {}).get("min.insync.replicas")
        if min_isr is not None and int(min_isr) > spec.get("replicas", 1):
            out(f"KafkaTopic {name}: min.insync.replicas {min_isr} > replicas {spec.get('replicas')}")
        key = next((k for k in TOPICS if settings.topic(k) == name), None)
        for config, value in (TOPIC_CONFIGS.get(key) or {}).items():
            if str((spec.get("config") or {}).get(config)) != value:
                out(f"KafkaTopic {name}: {config} {(spec.get('config') or {}).get(config)!r} != {value!r}, "
                    f"as the project creates it (services.common.settings.TOPIC_CONFIGS)")
    for key in TOPICS:
        if settings.topic(key) not in topic_partitions:
            out(f"topic {settings.topic(key)} has no KafkaTopic")

    # --- each Deployment and StatefulSet --------------------------------------------------------
    services = by_kind.get("Service", [])
    pdbs = by_kind.get("PodDisruptionBudget", [])
    accounts = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}
    modules_deployed: set[str] = set()
    images: set[str] = set()
    outbox_holders = outbox_holders_in_code(tuple(COMPONENTS))
    for dep in workloads:
        name, kind = dep["metadata"]["name"], dep["kind"]
        where = f"{kind} {name}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels") or {}
        if "replicas" in spec:
            out(f"{where}: sets spec.replicas; its HorizontalPodAutoscaler owns the count")

        targeting = [h for h in hpas if h["spec"]["scaleTargetRef"].get("kind") == kind
                     and h["spec"]["scaleTargetRef"].get("name") == name]
        scaled = [s for s in scaled_objects if s["spec"]["scaleTargetRef"].get("kind", "Deployment") == kind
                  and s["spec"]["scaleTargetRef"].get("name") == name]
        if not targeting and not scaled:
            out(f"{where} has no autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject) that targets it")
        elif len(targeting) + len(scaled) > 1:
            out(f"{where} is targeted by {len(targeting)} HorizontalPodAutoscalers and {len(scaled)} ScaledObjects")
        if not any(_matches(p["spec"].get("selector") or {}, labels) for p in pdbs):
            out(f"{where} has no PodDisruptionBudget")
        if not any(s["spec"].get("selector") and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
                   for s in services):
            out(f"{where} has no Service")
        if kind == "StatefulSet":
            found += statefulset_violations(dep, services, autoscaled=bool(targeting or scaled))
        account = pod.get("serviceAccountName")
        if account not in accounts:
            out(f"{where}: ServiceAccount {account!r} is not in the manifests")
        if pod.get("automountServiceAccountToken") is not False:
            out(f"{where}: mounts a service account token it does not need")
        if not pod.get("topologySpreadConstraints"):
            out(f"{where}: no topologySpreadConstraints")

        pod_sc = pod.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser", 0) == 0:
            out(f"{where}: the pod must run as non-root (runAsNonRoot: true, runAsUser != 0)")
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            out(f"{where}: seccompProfile RuntimeDefault missing")

        main = _containers(dep, init=False)
        for container in _containers(dep):
            cwhere = f"{where} container {container['name']}"
            images.add(container.get("image", ""))
            res = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (res.get(part) or {}):
                        out(f"{cwhere}: no {resource} {part}")
            sc = container.get("securityContext") or {}
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                out(f"{cwhere}: runs as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                out(f"{cwhere}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                out(f"{cwhere}: readOnlyRootFilesystem must be true")
            if sc.get("privileged"):
                out(f"{cwhere}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                out(f"{cwhere}: capabilities must drop ALL")
            refs = container.get("envFrom") or []
            cm_refs = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
            secret_refs = [r["secretRef"] for r in refs if "secretRef" in r]
            if settings_cm["metadata"]["name"] not in cm_refs:
                out(f"{cwhere}: does not read the settings ConfigMap {SETTINGS_CONFIGMAP}")
            if not any(r.get("name") == SECRET_NAME and not r.get("optional") for r in secret_refs):
                out(f"{cwhere}: does not read the Secret {SECRET_NAME} (required)")
            missing_cm = [n for n in cm_refs if n not in configmaps]
            if missing_cm:
                out(f"{cwhere}: reads ConfigMap(s) {missing_cm} that are not in the manifests")

        for container in pod.get("initContainers", []):
            cmd = list(container.get("command") or [])
            if cmd not in [list(c) for c in INIT_COMMANDS]:
                out(f"{where} init container {container['name']}: unexpected command {cmd}")

        if len(main) != 1:
            out(f"{where}: expected one container, found {len(main)}")
            continue
        container = main[0]
        cwhere = f"{where} container {container['name']}"
        module = _module(container)
        component = COMPONENTS.get(module or "")
        if component is None:
            out(f"{cwhere}: command {container.get('command')} is not `python -m <a Parley component>`")
            continue
        modules_deployed.add(module)
        if module in outbox_holders:
            found += outbox_violations(dep, container, module, load_settings({**pod_env, **container_env(container)}))

        # Probes, on the ports the settings give.
        for probe_name in ("readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe:
                out(f"{cwhere}: no {probe_name}")
                continue
            port = _probe_port(container, probe)
            if port is None:
                out(f"{cwhere}: {probe_name} uses a port the container does not declare")
            if component.addr_field and "grpc" not in probe:
                out(f"{cwhere}: {probe_name} must be a native gRPC probe")
            if component.addr_field and "grpc" in probe and port != port_of(getattr(settings, component.addr_field)):
                out(f"{cwhere}: {probe_name} gRPC port {port} != port of "
                    f"PARLEY_{component.addr_field.upper()} ({getattr(settings, component.addr_field)})")
            if not component.addr_field and port != getattr(settings, component.metrics_field):
                out(f"{cwhere}: {probe_name} port {port} != PARLEY_{component.metrics_field.upper()}")
        if component.addr_field:
            addr = getattr(settings, component.addr_field)
            grpc_port = _port(container, "grpc")
            if grpc_port != port_of(addr):
                out(f"{cwhere}: containerPort grpc {grpc_port} != port of PARLEY_{component.addr_field.upper()} ({addr})")
            host = addr.rsplit(":", 1)[0]
            svc = next((s for s in services if s["metadata"]["name"] == host.split(".")[0]), None)
            if svc is None:
                out(f"{cwhere}: PARLEY_{component.addr_field.upper()}={addr} names no Service")
            elif not any(p.get("port") == port_of(addr) for p in svc["spec"].get("ports", [])):
                out(f"Service {host}: no port {port_of(addr)} (PARLEY_{component.addr_field.upper()})")
            elif not all(labels.get(k) == v for k, v in (svc["spec"].get("selector") or {}).items()):
                out(f"Service {host} does not select the pods of {where}")
        metrics_port = _port(container, "metrics")
        expected_metrics = getattr(settings, component.metrics_field)
        if metrics_port != expected_metrics:
            out(f"{cwhere}: containerPort metrics {metrics_port} != PARLEY_{component.metrics_field.upper()} "
                f"({expected_metrics})")
        annotations = spec["template"]["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(expected_metrics):
            out(f"{where}: Prometheus annotations must scrape port {expected_metrics}")

        grace = pod.get("terminationGracePeriodSeconds", 30)
        needed = (settings.shutdown_grace_seconds + _pre_stop_seconds(container) + component.stop_seconds
                  + DRAIN_MARGIN_SECONDS)
        if grace < needed:
            out(f"{where}: terminationGracePeriodSeconds {grace} does not cover the drain "
                f"(PARLEY_SHUTDOWN_GRACE_SECONDS {settings.shutdown_grace_seconds:g} + preStop + "
                f"{component.stop_seconds:g} to stop + {DRAIN_MARGIN_SECONDS} = {needed:g})")

        for so in scaled:
            found += scaled_object_violations(so, module, component.consumes, settings, topic_partitions,
                                              MIN_CONSUMER_SCALE_DOWN_WINDOW)
        # Consumers: never more replicas than partitions, and a scale-down stabilisation window.
        for hpa in targeting:
            hspec = hpa["spec"]
            if component.consumes:
                bound = min([settings.topic_partitions] + [topic_partitions.get(settings.topic(t), 0)
                                                            for t in component.consumes])
                if hspec.get("maxReplicas", 0) > bound:
                    out(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: maxReplicas {hspec.get('maxReplicas')} > "
                        f"{bound} partitions of {', '.join(settings.topic(t) for t in component.consumes)}")
                window = ((hspec.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds")
                if window is None or window < MIN_CONSUMER_SCALE_DOWN_WINDOW:
                    out(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: a consumer group needs a scale-down "
                        f"stabilizationWindowSeconds >= {MIN_CONSUMER_SCALE_DOWN_WINDOW} (is {window})")

    # --- autoscalers --------------------------------------------------------------------------
    workload_names = {(d["kind"], d["metadata"]["name"]) for d in workloads}
    for hpa in hpas:
        hname = f"HorizontalPodAutoscaler {hpa['metadata']['name']}"
        hspec = hpa["spec"]
        if hpa["apiVersion"] != "autoscaling/v2":
            out(f"{hname}: apiVersion must be autoscaling/v2")
        target = hspec.get("scaleTargetRef") or {}
        if (target.get("kind"), target.get("name")) not in workload_names:
            out(f"{hname}: targets {target.get('kind')} {target.get('name')}, which is not in the manifests")
        if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hspec.get("metrics", [])):
            out(f"{hname}: no CPU metric")
        behavior = hspec.get("behavior") or {}
        if "scaleUp" not in behavior or "scaleDown" not in behavior:
            out(f"{hname}: behavior must set scaleUp and scaleDown")
        if not 1 <= hspec.get("minReplicas", 1) <= hspec.get("maxReplicas", 0):
            out(f"{hname}: needs 1 <= minReplicas <= maxReplicas")

    # --- who may reach whom -------------------------------------------------------------------
    found += network_violations(workloads, by_kind.get("NetworkPolicy", []),
                                lambda dep: _module((_containers(dep, init=False) or [{}])[0]))

    # --- one image, every component -----------------------------------------------------------
    if len(images) != 1:
        out(f"all containers must run the one Parley image, found {sorted(images)}")
    for image in images:
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            out(f"image {image!r} needs a pinned tag (set by the overlay)")
    for module in COMPONENTS:
        if module not in modules_deployed:
            out(f"no Deployment or StatefulSet runs `python -m {module}`")
    return found


def hpa_bounds(docs: list[Doc]) -> dict[str, tuple[int, int]]:
    return {d["metadata"]["name"]: (d["spec"]["minReplicas"], d["spec"]["maxReplicas"])
            for d in docs if d["kind"] == "HorizontalPodAutoscaler"}


_METRIC_SUFFIXES = re.compile(r"_(bucket|count|sum)$")


def metric_names(expr: str) -> set[str]:
    """Parley metric names a PromQL expression uses (histogram series suffixes removed)."""
    return {_METRIC_SUFFIXES.sub("", m) for m in re.findall(r"\bparley_[a-z0-9_]+", expr)}
