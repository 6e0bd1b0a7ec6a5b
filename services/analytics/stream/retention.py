"""Retention of the analytics tables: rows past their age are deleted in short batches, by one worker at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg
from mode import Service
from prometheus_client import Counter

from services.common import db

logger = logging.getLogger(__name__)

RETENTION_DELETED = Counter(
    "parley_worker_retention_deleted_total", "Rows the stream worker deleted as older than their retention.", ["table"]
)

# pg_try_advisory_lock key of the analytics retention: the stream worker runs on several pods, and one
# run at a time is enough (two would race for the same rows, each batch doing the other's work twice).
RETENTION_LOCK = 0x7061726C_65790001   # "parley" + 1
BATCH_ROWS = 5000
# Between two batches: the sink's writers and autovacuum get the table's pages and locks back.
BATCH_PAUSE_SECONDS = 0.01
# The first run after the worker starts (a run a full interval after each start would never come in a
# worker restarted more often than that).
FIRST_RUN_SECONDS = 30.0


@dataclass(frozen=True)
class Target:
    """A table whose rows older than `days` (by `column`) are deleted; `keep`: rows kept whatever their age."""

    table: str
    column: str
    brin_index: str
    keep: str = ""


CONVERSATIONS = Target("conversations", "occurred_at", "conversations_time_brin_idx")
# Pending feedback is still looked for by the attribution (sink.ATTRIBUTE_PENDING_FEEDBACK); it never
# is older than PARLEY_FEEDBACK_PENDING_HORIZON_SECONDS (7 days), shorter than the turns' retention
# (settings: at least 8 days and longer than the horizon), so `keep` only guards a worker that was down
# longer than the difference: such a row is deleted once it has expired, at a later run.
FEEDBACK_EVENTS = Target("feedback_events", "occurred_at", "feedback_events_time_brin_idx", keep="pending")
METRICS_MINUTE = Target("metrics_minute", "minute", "metrics_minute_time_brin_idx")


def delete_batch_sql(t: Target) -> str:
    """One batch: at most $2 rows older than $1, found through the time column's BRIN and deleted by their
    ctids (a TID scan), each batch its own short transaction. Returns the rows deleted and the heap
    blocks they were in. The batches of a run read again the pages whose rows the batches before
    deleted (a BRIN cannot skip them): measured, that costs little (864,000 of 2.1M turns in 173
    batches of 5,000: the first took 5 ms, the last 8 ms; walking the time in windows, so that each
    batch reads only its window's ranges, was slower, 1.57 against 1.00 s)."""
    keep = f" AND NOT {t.keep}" if t.keep else ""
    return f"""
WITH gone AS (
    DELETE FROM {t.table} WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM {t.table} WHERE {t.column} < $1{keep} LIMIT $2))
    RETURNING ctid
)
SELECT count(*)::int AS n, coalesce(array_agg(DISTINCT (ctid::text::point)[0]::bigint), '{{}}') AS blocks FROM gone
"""


# A BRIN range's summary only ever widens: once a range's old rows are deleted and vacuum frees their
# space, new rows written there would make it cover [the deleted rows' time, now], and every batch of
# the next runs (and TopQuestions' recent ranges) would read it. Summarized again from its rows as they
# are after the deletes, it covers what is left. (Rows deleted by a transaction that a snapshot still
# open may see are counted in the summary: it is then as wide as before, which is only slower.)
RESUMMARIZE = """
SELECT brin_desummarize_range($1::regclass, $2::bigint), brin_summarize_range($1::regclass, $2::bigint)
"""
BRIN_PAGES_PER_RANGE = 128   # the default, which the three BRIN indexes keep


@dataclass
class RunResult:
    """What one run did: rows deleted per table, or `skipped` when another worker held the lock."""

    deleted: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0


class Retention:
    """Deletes the analytics rows past their retention (`turns_days` for conversations and feedback_events,
    `metrics_days` for metrics_minute; 0 keeps a table's rows for good) through `pool`, when this worker
    holds the retention lock."""

    def __init__(self, pool: asyncpg.Pool | None, *, turns_days: float, metrics_days: float,
                 batch_rows: int = BATCH_ROWS, batch_pause: float = BATCH_PAUSE_SECONDS) -> None:
        self.pool = pool
        self.batch_rows = batch_rows
        self.batch_pause = batch_pause
        self.targets: list[tuple[Target, timedelta]] = [
            (t, timedelta(days=d)) for t, d in ((CONVERSATIONS, turns_days), (FEEDBACK_EVENTS, turns_days),
                                                (METRICS_MINUTE, metrics_days)) if d > 0]

    async def run(self, now: datetime | None = None) -> RunResult:
        started = time.monotonic()
        result = RunResult()
        if not self.targets:
            return result
        now = now or datetime.now(timezone.utc)
        assert self.pool is not None
        async with db.advisory_lock(self.pool, RETENTION_LOCK) as conn:
            if conn is None:
                result.skipped = True
                return result
            for target, age in self.targets:
                result.deleted[target.table] = await self._delete_older(conn, target, now - age)
        result.seconds = time.monotonic() - started
        logger.info("retention run: deleted %s in %.1f s",
                    ", ".join(f"{n} row(s) from {table}" for table, n in result.deleted.items()), result.seconds)
        return result

    async def _delete_older(self, conn: asyncpg.Connection, t: Target, cutoff: datetime) -> int:
        sql = delete_batch_sql(t)
        total, blocks = 0, set()
        while True:
            row = await conn.fetchrow(sql, cutoff, self.batch_rows)
            if row["n"]:
                total += row["n"]
                RETENTION_DELETED.labels(t.table).inc(row["n"])
                blocks.update(row["blocks"])
            if row["n"] < self.batch_rows:
                break
            await asyncio.sleep(self.batch_pause)
        await self._resummarize(conn, t, blocks)
        return total

    async def _resummarize(self, conn: asyncpg.Connection, t: Target, blocks: set[int]) -> None:
        for start in sorted({b - b % BRIN_PAGES_PER_RANGE for b in blocks}):
            try:
                async with conn.transaction():
                    # It waits for autovacuum's lock on the table at most this long (skipped then: the
                    # range is only slower to scan).
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    await conn.execute(RESUMMARIZE, t.brin_index, start)
            except asyncpg.LockNotAvailableError:
                logger.info("BRIN range at block %d of %s not summarized again (table busy)", start, t.brin_index)


class RetentionRunner(Service):
    """Runs `retention` FIRST_RUN_SECONDS after start (or `interval` if shorter), then every `interval`,
    through the pool `pool()` gives once started (the sink's, opened before). A failed run (PostgreSQL
    away) is logged and tried again at the next."""

    def __init__(self, retention: Retention, interval: float, pool: Callable[[], asyncpg.Pool], **kwargs) -> None:
        super().__init__(**kwargs)
        self.retention = retention
        self.interval = interval
        self._pool = pool
        self.runs = 0

    async def on_start(self) -> None:
        self.retention.pool = self._pool()
        if self.retention.targets:
            self.add_future(self._run_forever())

    async def _run_forever(self) -> None:
        await self.sleep(min(FIRST_RUN_SECONDS, self.interval))
        while not self.should_stop:
            try:
                await self.retention.run()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the rows wait for the next run
                logger.warning("retention run failed: %s", exc)
            self.runs += 1
            await self.sleep(self.interval)
