"""Prometheus metrics shared by every service: per-method RPC latency and status counts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_LATENCY = Histogram(
    "parley_grpc_server_handling_seconds",
    "Time to handle one RPC, by service and method.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RPC_HANDLED = Counter(
    "parley_grpc_server_handled_total",
    "RPCs completed, by service, method and gRPC status code.",
    ["service", "method", "code"],
)
EVENTS_PUBLISHED = Counter(
    "parley_events_published_total", "Events handed to Kafka, by topic and outcome.", ["topic", "outcome"]
)

DEPENDENCY_UP = Gauge(
    "parley_dependency_up", "1 when a dependency answered its last probe, by service and dependency.",
    ["service", "dependency"],
)

OUTBOX_PENDING = Gauge("parley_outbox_pending", "Events in the local outbox not yet acknowledged by Kafka.", ["outbox"])
OUTBOX_DELIVERED = Counter("parley_outbox_delivered_total", "Events delivered from the outbox, by topic.",
                           ["outbox", "topic"])
OUTBOX_DROPPED = Counter("parley_outbox_dropped_total", "Events refused by a full (or unwritable) outbox, by topic.",
                         ["outbox", "topic"])
KNOWLEDGE_FOLLOWER_UP = Gauge("parley_knowledge_follower_up", "1 while the knowledge-update follower is consuming.",
                              ["service"])
KNOWLEDGE_FOLLOWER_RESTARTS = Counter("parley_knowledge_follower_restarts_total",
                                      "Times the knowledge-update follower was restarted after a failure.", ["service"])


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics over HTTP; a port of 0 disables it."""
    if port:
        start_http_server(port, addr=host)
