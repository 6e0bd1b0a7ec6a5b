"""Prometheus metrics shared by every service: per-method RPC latency and status counts."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics over HTTP; a port of 0 disables it."""
    if port:
        start_http_server(port, addr=host)
