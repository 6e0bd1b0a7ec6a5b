"""Settings of the analytics service and its stream worker (over the shared `CommonSettings`)."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from services.analytics.stream.decode import MAX_AHEAD_SECONDS
from services.common.settings import CommonSettings
from services.common.settings import get_settings as _get_settings

# The chat turns topic's retention (deploy/k8s/base/kafka/topics.yaml): a turn is stamped before its
# feedback, so one not stored when its feedback is older than this is gone from Kafka.
PENDING_FEEDBACK_HORIZON_SECONDS = 7 * 24 * 3600.0
# The shortest retention of the analytics rows (conversations, feedback_events, metrics_minute), in days.
# A replay of the topics (a stored offset lowered, a topic read again from its start) brings events up to
# the topics' retention (7 days) old, and only the stored rows' event ids keep them from being counted
# again; pending feedback (up to the horizon above old) moves its counts between metrics rows of its
# minute, which must still be there. A day more than the 7 covers a run's lateness.
MIN_RETENTION_DAYS = 8


class AnalyticsSettings(CommonSettings):
    """The analytics API's bounds; the stream worker's consumer, batches, liveness and garbage collector."""

    # Analytics API: live StreamMetrics held at once (past either: RESOURCE_EXHAUSTED with a retry hint;
    # the admin token is held to the process's bound only), and the wait for a pooled PostgreSQL
    # connection (past it: UNAVAILABLE with a retry hint).
    metrics_streams_per_key: int = 10
    metrics_streams_per_process: int = 200
    # GetMetrics, TopQuestions and KnowledgeGaps of one key in flight at once in a process (a year's
    # range is a heavy query: a few of one key's must not take the pool from every other tenant); the
    # admin token is held to the process's bound only.
    analytics_queries_per_key: int = 4
    analytics_queries_per_process: int = 200
    analytics_pool_acquire_seconds: float = 2.0
    # The longest an analytics statement runs (PostgreSQL's statement_timeout for the API's sessions): a
    # query behind a locked table or past any sensible cost ends UNAVAILABLE, and its connection is free.
    analytics_statement_seconds: float = 15.0

    # Stream processor.
    worker_app_id: str = "parley-analytics"
    stream_batch_size: int = 1000
    stream_lagging_batches: int = 4              # a writer behind writes batches of up to this many batch sizes
    stream_buffer_events: int = 240_000          # events held at most over all partitions (bounds the memory)
    worker_stall_seconds: float = 60.0           # liveness: stuck this long, no dependency to blame
    worker_lag_interval_seconds: float = 5.0
    worker_session_timeout_seconds: float = 10.0
    minutely_publish_interval_seconds: float = 5.0
    feedback_attribution_interval_seconds: float = 2.0  # feedback applied before its turn: moved this often
    # Feedback whose turn is not stored this long after it is given up on (left under UNKNOWN).
    feedback_pending_horizon_seconds: float = PENDING_FEEDBACK_HORIZON_SECONDS

    # Stream processor: its own consumer of the hot topics, retries, event loop.
    stream_fetch_max_bytes: int = 64 * 1024 * 1024        # one fetch across partitions
    stream_partition_fetch_bytes: int = 8 * 1024 * 1024    # per partition and fetch
    stream_retry_max_seconds: float = 5.0                  # longest wait between two tries of a batch
    stream_max_ahead_seconds: float = MAX_AHEAD_SECONDS    # an event stamped further ahead is dead-lettered
    stream_uvloop: bool = True                             # uvloop as the worker's event loop

    # Stream processor: its garbage collector (services/analytics/stream/__main__.py).
    stream_gc_threshold: int = 50_000   # first-generation threshold; 0: Python's own (700), nothing frozen

    # Stream processor: retention of its tables (services/analytics/stream/retention.py; how often and in
    # what batches: CommonSettings); 0 keeps them for good.
    retention_turns_days: float = Field(default=90.0, ge=0)     # conversations and feedback_events
    retention_metrics_days: float = Field(default=400.0, ge=0)  # metrics_minute (GetMetrics reads up to 400 days)

    @field_validator("retention_turns_days", "retention_metrics_days")
    @classmethod
    def _keeps_what_replays_need(cls, days: float, info: ValidationInfo) -> float:
        """Turns kept less long than the Kafka topics keep them would be counted again by a replay: their
        event ids are how the sink knows a redelivered turn (see MIN_RETENTION_DAYS)."""
        horizon = info.data.get("feedback_pending_horizon_seconds", PENDING_FEEDBACK_HORIZON_SECONDS)
        least = max(MIN_RETENTION_DAYS, horizon / 86400 + 1)
        if 0 < days < least:
            raise ValueError(
                f"{days:g} days is too short: keep at least {least:g} (the Kafka topics keep 7 days of events, "
                "which a replay brings again and only the stored rows' event ids keep from being counted twice; "
                "pending feedback looks for its turn for PARLEY_FEEDBACK_PENDING_HORIZON_SECONDS), or 0 to keep "
                "the rows for good")
        return days


def get_settings() -> AnalyticsSettings:
    """The analytics settings of this process, read once (the stream worker starts without `run_service`)."""
    return _get_settings(AnalyticsSettings)
