"""The settings every service shares; read once at start from `PARLEY_*` environment variables.

A service's own settings live with it (`services/<name>/settings.py`, a subclass of `CommonSettings`);
`services/settings.py` composes them all for the CLI, the launcher, the benchmarks and the tests."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Base topic names; `PARLEY_TOPIC_NAMESPACE` is appended to each (tests use it to stay apart).
TOPICS = {
    "chat_turns": "parley.chat.turns.v1",
    "feedback": "parley.feedback.v1",
    "crawl_requests": "parley.crawl.requests.v1",
    "knowledge_updated": "parley.knowledge.updated.v1",
    "metrics_minutely": "parley.metrics.minutely.v1",
    "deadletter": "parley.deadletter.v1",
    # One owner of knowledge: crawled pages handed to the search service's indexer.
    "knowledge_pages": "parley.knowledge.pages.v1",
}

_DAY_MS = 24 * 3600 * 1000
# Each topic's configuration where the project creates it (`parley up`, `parley migrate`; a cluster's
# KafkaTopic resources carry the same, which tests/deploy checks): a broker's own defaults (often one
# day, or one week) would decide how long turns can be replayed and dead letters inspected.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    # The worker's replay window; stamped by the broker, whose clock the worker checks occurred_at against
    # (services/analytics/stream/consumer.py: neither a producer's clock nor the worker's decides).
    "chat_turns": {"retention.ms": str(7 * _DAY_MS), "cleanup.policy": "delete",
                   "message.timestamp.type": "LogAppendTime"},
    "feedback": {"retention.ms": str(7 * _DAY_MS), "cleanup.policy": "delete",
                 "message.timestamp.type": "LogAppendTime"},
    "crawl_requests": {"retention.ms": str(_DAY_MS), "cleanup.policy": "delete"},   # older is stale
    "knowledge_updated": {"retention.ms": str(_DAY_MS), "cleanup.policy": "delete"},   # caches live minutes
    "metrics_minutely": {"retention.ms": str(30 * _DAY_MS), "cleanup.policy": "delete"},
    "deadletter": {"retention.ms": str(14 * _DAY_MS), "cleanup.policy": "delete"},   # to inspect and replay
    # An indexer outage of a few days loses no crawled page; a page's chunks (2 MB of HTML at most).
    "knowledge_pages": {"retention.ms": str(7 * _DAY_MS), "cleanup.policy": "delete", "max.message.bytes": "4194304"},
}


# Admin tokens anyone can read: the development default and the placeholder of
# deploy/k8s/secret.example.yaml (applied unchanged, it would be the token of a cluster).
DEV_ADMIN_TOKEN = "parley-dev-admin-token"
WELL_KNOWN_ADMIN_TOKENS = frozenset({DEV_ADMIN_TOKEN, "REPLACE-WITH-A-LONG-RANDOM-TOKEN"})


def is_loopback(host: str) -> bool:
    """Whether a bind host is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False        # a name, or "": it may resolve to (or mean) any interface


class CommonSettings(BaseSettings):
    """Endpoints, each other's addresses, topics, admin token, logging, the event loop and the product-key
    admission that several services share."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    # Endpoints of the real components.
    # Those that may hold a password, and the admin token, stay out of the settings' repr (an error
    # report or a debug line that prints the settings).
    kafka_bootstrap: str = "127.0.0.1:19092"
    postgres_dsn: str = Field(default="postgresql://parley:parley@127.0.0.1:15432/parley", repr=False)
    redis_url: str = Field(default="redis://127.0.0.1:16379/0", repr=False)

    # Where the services listen (bind) and where clients find them (addr).
    grpc_bind_host: str = "127.0.0.1"
    search_addr: str = "127.0.0.1:50051"
    response_addr: str = "127.0.0.1:50052"
    scraper_addr: str = "127.0.0.1:50053"
    analytics_addr: str = "127.0.0.1:50054"
    search_metrics_port: int = 9101
    response_metrics_port: int = 9102
    scraper_metrics_port: int = 9103
    analytics_metrics_port: int = 9104
    worker_metrics_port: int = 9105
    crawler_metrics_port: int = 9106
    indexer_metrics_port: int = 9111
    grpc_max_message_bytes: int = 4 * 1024 * 1024
    # Bounds of a server's calls and connections (grpc_server.Transport): calls in flight per process
    # (past it RESOURCE_EXHAUSTED, also for calls whose request never comes), streams per connection,
    # and a connection's age, after which its client reconnects (and so spreads over new replicas
    # behind a Service), its calls given the grace to end.
    grpc_max_concurrent_rpcs: int = 2000
    grpc_max_streams_per_connection: int = 256
    grpc_max_connection_age_seconds: float = 60.0
    grpc_max_connection_age_grace_seconds: float = 600.0
    shutdown_grace_seconds: float = 20.0

    # Kafka topics.
    topic_namespace: str = ""
    # Consumer group of the search service's indexer of the knowledge pages topic: the scraper reads its
    # committed offsets to report a crawl done only once its pages are indexed.
    indexer_group: str = "parley-search-indexer"
    topic_partitions: int = 4
    topic_replication: int = 1

    # Retention of old rows, by the process that owns each table (the stream worker's analytics tables,
    # the crawl workers' finished jobs): how often it runs, and rows deleted per transaction.
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    retention_batch_rows: int = Field(default=5000, gt=0)

    # Admin RPCs (product keys, knowledge). Production must set its own via a Secret: a well-known token
    # stops a service that listens beyond loopback (see _own_admin_token_beyond_loopback).
    admin_token: str = Field(default=DEV_ADMIN_TOKEN, repr=False)

    # Messages and passages (search and response).
    max_message_chars: int = 4000
    max_passages: int = 5

    # Product-key admission (search, response, scraper, analytics).
    key_cache_ttl_seconds: float = 30.0   # product-key cache in Redis (bound on staleness)
    rate_limit_per_second: float = 20.0   # per-key token bucket defaults (product_keys.settings overrides)
    rate_limit_burst: int = 40

    # Tenant authentication (product keys outside the search service, Redis-down fallback).
    key_local_cache_seconds: float = 3.0   # without Redis: a key record kept in process (bound on a rotation missed)

    # Logging.
    log_level: str = "INFO"
    log_json: bool = True

    # Event loop of the asyncio services: uvloop serves the cached chat path faster (bench "chat");
    # "asyncio" is the standard loop, kept for comparison and for debugging.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    @field_validator("admin_token")
    @classmethod
    def _own_admin_token_beyond_loopback(cls, token: str, info: ValidationInfo) -> str:
        """A service other machines can reach must not take a token anyone can read; on loopback the
        default keeps `make run` and the tests working with nothing to set. (grpc_bind_host is declared
        before admin_token, so it is validated and in `info.data` by now.)"""
        host = info.data.get("grpc_bind_host", "")
        if token.strip() in WELL_KNOWN_ADMIN_TOKENS and not is_loopback(host):
            raise ValueError(f"the admin token is the well-known {token.strip()!r} while the services listen on "
                             f"PARLEY_GRPC_BIND_HOST={host!r}, beyond loopback: set PARLEY_ADMIN_TOKEN to a long "
                             "random secret of this deployment (e.g. `openssl rand -hex 32`)")
        return token

    def topic(self, name: str) -> str:
        """The full topic name for one of `TOPICS`."""
        return TOPICS[name] + self.topic_namespace


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


class SettingsError(SystemExit):
    """A missing or malformed setting: stops the process with a message naming it."""


@lru_cache
def get_settings(cls: type[SettingsT] = CommonSettings) -> SettingsT:
    """The settings of this process as `cls` (a service's own class), read once."""
    try:
        return cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"PARLEY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
