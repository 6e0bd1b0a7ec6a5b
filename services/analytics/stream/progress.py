"""Consumption progress of the worker: consumer lag as a metric, and liveness from progress."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

CONSUMER_LAG = Gauge(
    "parley_worker_consumer_lag", "Messages waiting in a partition (high watermark - next offset).",
    ["topic", "partition"],
)
EVENTS_APPLIED = Counter("parley_worker_events_applied_total", "Events applied to PostgreSQL.", ["topic"])
EVENTS_SKIPPED = Counter(
    "parley_worker_events_skipped_total", "Redelivered events dropped because their offset was applied.", ["topic"]
)
DEAD_LETTERS = Counter("parley_worker_dead_letters_total", "Messages sent to the dead-letter topic.", ["topic"])
EVENTS_LOST = Counter(
    "parley_worker_events_lost_total",
    "Records Kafka deleted (retention, delete-records) before the worker applied them: the gap between a "
    "partition's stored offset and its first offset, found when the partition is assigned.", ["topic"],
)
OFFSETS_RESET = Counter(
    "parley_worker_offset_resets_total",
    "Partitions whose stored offset was past the partition's end (the topic made again, Kafka's data lost), "
    "found when the partition is assigned: read again from their first offset.", ["topic"],
)
BATCH_SECONDS = Gauge("parley_worker_last_batch_seconds", "Time to write the last batch.", ["topic"])
BATCHES_WRITTEN_AGAIN = Counter(
    "parley_worker_batches_written_again_total",
    "Batches of turns written a second time, skipping events stored before (redelivered at new offsets).",
)
FEEDBACK_UNATTRIBUTED = Counter(
    "parley_worker_feedback_unattributed_total",
    "Feedback whose turn was not stored within PARLEY_FEEDBACK_PENDING_HORIZON_SECONDS of it (dead-lettered, "
    "or dropped by a full outbox): no longer looked for, counted under UNKNOWN.",
)
WRITE_FAILURES = Counter(
    "parley_worker_write_failures_total", "Failed attempts to write a batch (each one is retried)."
)
WRITE_FAILING = Gauge("parley_worker_write_failing", "1 while the last attempt to write a batch failed.")


@dataclass
class Progress:
    """Live unless the worker is stuck in a way a restart may cure: messages wait while nothing has been
    applied for `stall_seconds` and no write fails, or writes have failed for that long for a reason
    that is not a dependency's. Writes failing because PostgreSQL (or a broker) is unreachable or
    refuses writes for now (apply.dependency_failing) keep it live, however long: a restart cannot bring
    PostgreSQL back, a restart storm ends in CrashLoopBackOff that delays the catch-up once it is back,
    and each restart loses what the worker holds in memory (the minutes its summaries owe). The
    detail and parley_worker_write_failing say what fails meanwhile."""

    stall_seconds: float
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    last_progress: float = field(default_factory=time.monotonic)
    failing_since: float | None = None
    unexplained_since: float | None = None  # writes failing since then, for no dependency's reason
    failure: str = ""
    waiting_for: str = ""  # set while the start waits for a dependency (startup.KafkaReachable)

    def advanced(self, topic: str, partition: int, next_offset: int) -> None:
        key = (topic, partition)
        if next_offset > self.next_offset.get(key, -1):
            self.next_offset[key] = next_offset
            self.last_progress = time.monotonic()

    def failing(self, reason: str, dependency: bool) -> None:
        """A write failed; `dependency`: for a dependency unreachable or refusing writes for now."""
        WRITE_FAILURES.inc()
        WRITE_FAILING.set(1)
        self.failure = reason
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if dependency:
            self.unexplained_since = None
        elif self.unexplained_since is None:
            self.unexplained_since = now

    def recovered(self) -> None:
        if self.failing_since is not None:
            WRITE_FAILING.set(0)
            self.failing_since = None
            self.unexplained_since = None
            self.failure = ""

    def observe_lag(self, topic: str, partition: int, highwater: int | None, position: int | None) -> None:
        if highwater is None:
            return
        done = self.next_offset.get((topic, partition))
        if done is None:
            done = position if position is not None else highwater
        lag = max(0, highwater - done)
        self.lag[(topic, partition)] = lag
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)

    def forget(self, topic: str, partition: int) -> None:
        """The partition is no longer this worker's, or its stored offset was lowered: its lag and
        position are forgotten (`advanced` only ever moves a position forward)."""
        self.next_offset.pop((topic, partition), None)
        self.lag.pop((topic, partition), None)
        CONSUMER_LAG.labels(topic, str(partition)).set(0)

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        now = now if now is not None else time.monotonic()
        waiting = sum(self.lag.values())
        idle = now - self.last_progress
        if self.waiting_for:
            return True, f"starting: waiting for {self.waiting_for}"
        if self.failing_since is not None:
            failing = now - self.failing_since
            detail = f"writes failing for {failing:.0f}s ({self.failure}); {waiting} message(s) waiting"
            if self.unexplained_since is None:
                return True, f"{detail}; a dependency is unreachable or refusing writes, which a restart cannot cure"
            return now - self.unexplained_since <= self.stall_seconds, detail
        if waiting > 0 and idle > self.stall_seconds:
            return False, f"{waiting} message(s) waiting and no progress for {idle:.0f}s"
        return True, f"lag {waiting}, last progress {idle:.0f}s ago"
