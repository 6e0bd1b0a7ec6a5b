"""Policy of the KEDA ScaledObjects: the Kafka consumers scale on their own group's lag, never past
their topics' partitions, and the lag threshold follows the measured per-replica rate."""

from __future__ import annotations

from typing import Any

from services.settings import Settings

Doc = dict[str, Any]

# The stream worker's measured rate (`make bench ARGS="--only stream"`, events/s of one replica)
# and the freshness goal: one replica may hold RATE x GOAL events of lag before KEDA adds another.
# deploy/k8s/base/stream-worker/scaledobject.yaml spells out the same arithmetic.
STREAM_WORKER_EVENTS_PER_S = 40_000
FRESHNESS_GOAL_S = 2
# Component module -> the Kafka consumer group whose lag measures its backlog, from its settings.
# The stream worker consumes turns and feedback with its own aiokafka consumer in the group
# `<PARLEY_WORKER_APP_ID>-events` (services/analytics/stream/app.py), not in Faust's own group
# `<PARLEY_WORKER_APP_ID>`, whose lag stays at zero however far behind the worker is.
CONSUMER_GROUPS = {
    "services.analytics.stream": lambda s: f"{s.worker_app_id}-events",
    "services.scraper.worker": lambda s: s.scraper_group_id,
}


def expected_lag_threshold(module: str) -> int | None:
    if module == "services.analytics.stream":
        return STREAM_WORKER_EVENTS_PER_S * FRESHNESS_GOAL_S
    return None


def scaled_object_violations(
    so: Doc, module: str, consumes: tuple[str, ...], settings: Settings, topic_partitions: dict[str, int],
    min_window: int,
) -> list[str]:
    """One ScaledObject that targets the Deployment running `module` (which consumes `consumes`)."""
    found: list[str] = []
    out = found.append
    where = f"ScaledObject {so['metadata']['name']}"
    spec = so["spec"]
    if not consumes:
        return [f"{where}: targets {module}, which consumes no topic (scale it with a CPU HPA)"]
    topics = {settings.topic(t) for t in consumes}
    bound = min([settings.topic_partitions] + [topic_partitions.get(t, 0) for t in topics])
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if high > bound:
        out(f"{where}: maxReplicaCount {high} > {bound} partitions of {', '.join(sorted(topics))}")
    if not 1 <= low <= high:
        out(f"{where}: needs 1 <= minReplicaCount <= maxReplicaCount (is {low}, {high})")
    behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
    window = (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds")
    if window is None or window < min_window:
        out(f"{where}: a consumer group needs a scale-down stabilizationWindowSeconds >= {min_window} (is {window})")
    triggers = spec.get("triggers") or []
    seen = set()
    group = CONSUMER_GROUPS[module](settings)
    for trigger in triggers:
        meta = trigger.get("metadata") or {}
        if trigger.get("type") != "kafka":
            out(f"{where}: trigger {trigger.get('type')!r} is not the Kafka lag scaler")
            continue
        seen.add(meta.get("topic"))
        if meta.get("consumerGroup") != group:
            out(f"{where}: consumerGroup {meta.get('consumerGroup')!r} is not the worker's group {group!r}")
        if meta.get("bootstrapServers") != settings.kafka_bootstrap:
            out(f"{where}: bootstrapServers {meta.get('bootstrapServers')!r} != PARLEY_KAFKA_BOOTSTRAP "
                f"{settings.kafka_bootstrap!r}")
        if meta.get("allowIdleConsumers", "false") != "false":
            out(f"{where}: allowIdleConsumers must be \"false\" (no replica beyond the partitions)")
        threshold = str(meta.get("lagThreshold", ""))
        expected = expected_lag_threshold(module)
        if not threshold.isdigit() or int(threshold) <= 0:
            out(f"{where}: lagThreshold {threshold!r} must be a positive count of messages")
        elif expected is not None and int(threshold) != expected:
            out(f"{where}: lagThreshold {threshold} != {STREAM_WORKER_EVENTS_PER_S} events/s x "
                f"{FRESHNESS_GOAL_S} s = {expected}")
    if seen != topics:
        out(f"{where}: triggers watch {sorted(t for t in seen if t)}, the worker consumes {sorted(topics)}")
    return found
