"""Writes a batch of chat turns to PostgreSQL with one statement, together with the consumed offsets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
from mode import Service

from services.analytics.histogram import N_BUCKETS, bucket_of
from services.common import db
from services.common.pb.parley.v1 import common_pb2, events_pb2

logger = logging.getLogger(__name__)

# Only turns whose event_id is new are inserted into conversations (RETURNING), and only those are
# counted into metrics_minute: a replayed or redelivered event changes nothing.
WRITE_TURNS = f"""
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::float8[], $14::float8[],
        $15::float8[], $16::int[], $17::int[], $18::float8[], $19::text[],
        $20::int[], $21::int[], $22::int[], $23::int[]
    ) AS b(event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
           strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms,
           llm_ms, tokens_in, tokens_out, cost_usd, source_ids,
           total_b, ttft_b, search_b, llm_b)
), inserted AS (
    INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
                               strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
                               tokens_in, tokens_out, cost_usd, source_ids)
    SELECT event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
           strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
           tokens_in, tokens_out, cost_usd, coalesce(string_to_array(nullif(source_ids, ''), ','), '{{}}')
    FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, turns, cache_hits, errors, no_answers,
                                 tokens_in, tokens_out, total_hist, ttft_hist, search_hist, llm_hist)
SELECT b.product_key_id, date_trunc('minute', b.occurred_at), b.strategy, b.model,
       count(*),
       count(*) FILTER (WHERE b.cache_status IN ('HIT', 'SHARED')),
       count(*) FILTER (WHERE b.error_code <> ''),
       count(*) FILTER (WHERE b.strategy = 'NO_ANSWER'),
       sum(b.tokens_in), sum(b.tokens_out),
       parley_hist_of(array_agg(b.total_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.ttft_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.search_b), {N_BUCKETS}),
       parley_hist_of(array_agg(b.llm_b), {N_BUCKETS})
FROM batch b JOIN inserted USING (event_id)
GROUP BY 1, 2, 3, 4
ON CONFLICT (product_key_id, minute, strategy, model) DO UPDATE SET
    turns = m.turns + excluded.turns,
    cache_hits = m.cache_hits + excluded.cache_hits,
    errors = m.errors + excluded.errors,
    no_answers = m.no_answers + excluded.no_answers,
    tokens_in = m.tokens_in + excluded.tokens_in,
    tokens_out = m.tokens_out + excluded.tokens_out,
    total_hist = parley_hist_add(m.total_hist, excluded.total_hist),
    ttft_hist = parley_hist_add(m.ttft_hist, excluded.ttft_hist),
    search_hist = parley_hist_add(m.search_hist, excluded.search_hist),
    llm_hist = parley_hist_add(m.llm_hist, excluded.llm_hist),
    updated_at = now()
"""

WRITE_FEEDBACK = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
        AS b(event_id, product_key_id, request_id, occurred_at, rating, comment)
), inserted AS (
    INSERT INTO feedback_events (event_id, product_key_id, request_id, occurred_at, rating, comment)
    SELECT event_id, product_key_id, request_id, occurred_at, rating, comment FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, feedback_up, feedback_down)
SELECT b.product_key_id, date_trunc('minute', b.occurred_at),
       coalesce(c.strategy, 'UNKNOWN'), coalesce(c.model, 'unknown'),
       count(*) FILTER (WHERE b.rating > 0), count(*) FILTER (WHERE b.rating < 0)
FROM batch b
JOIN inserted USING (event_id)
LEFT JOIN conversations c ON c.request_id = b.request_id AND c.product_key_id = b.product_key_id
GROUP BY 1, 2, 3, 4
ON CONFLICT (product_key_id, minute, strategy, model) DO UPDATE SET
    feedback_up = m.feedback_up + excluded.feedback_up,
    feedback_down = m.feedback_down + excluded.feedback_down,
    updated_at = now()
"""

# The stored offsets are locked for the transaction: events below them were applied already
# (a redelivery after a crash between the PostgreSQL commit and the Kafka commit) and are dropped.
LOCK_OFFSETS = """
SELECT topic, partition, next_offset FROM stream_offsets
WHERE consumer_group = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))
FOR UPDATE
"""

SAVE_OFFSETS = """
INSERT INTO stream_offsets (consumer_group, topic, partition, next_offset)
SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = greatest(stream_offsets.next_offset, excluded.next_offset), updated_at = now()
"""

STORED_OFFSETS = "SELECT topic, partition, next_offset FROM stream_offsets WHERE consumer_group = $1"

@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


_STRATEGY = {v.number: v.name.removeprefix("STRATEGY_") for v in common_pb2.Strategy.DESCRIPTOR.values}
_CACHE = {v.number: v.name.removeprefix("CACHE_STATUS_") for v in common_pb2.CacheStatus.DESCRIPTOR.values}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _when(ts) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def turn_columns(turns: Sequence[events_pb2.ChatTurn]) -> list[list]:
    """The batch as one array per column, in WRITE_TURNS parameter order; duplicates dropped.
    (This runs for every event: plain lookups, no per-call enum descriptor work.)"""
    seen: set[str] = set()
    cols: list[list] = [[] for _ in range(23)]
    (event_id, key_id, session_id, request_id, occurred_at, message, answer, strategy, model, cache_status,
     error_code, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd, source_ids,
     total_b, ttft_b, search_b, llm_b) = (c.append for c in cols)
    for t in turns:
        if t.event_id in seen:
            continue
        seen.add(t.event_id)
        tm = t.timings
        usage = t.usage
        event_id(t.event_id)
        key_id(t.product_key_id)
        session_id(t.session_id)
        request_id(t.request_id)
        occurred_at(_when(t.occurred_at))
        message(t.message)
        answer(t.answer)
        strategy(_STRATEGY.get(t.strategy, "UNSPECIFIED"))
        model(t.model or "unknown")
        cache_status(_CACHE.get(t.cache_status, "UNSPECIFIED"))
        error_code(t.error_code)
        total_ms(tm.total_ms)
        ttft_ms(tm.ttft_ms)
        search_ms(tm.search_ms)
        llm_ms(tm.llm_ms)
        tokens_in(usage.prompt_tokens)
        tokens_out(usage.completion_tokens)
        cost_usd(t.cost_usd)
        source_ids(",".join(t.source_ids))
        total_b(bucket_of(tm.total_ms))
        ttft_b(bucket_of(tm.ttft_ms))
        search_b(bucket_of(tm.search_ms))
        llm_b(bucket_of(tm.llm_ms))
    return cols


def feedback_columns(items: Sequence[events_pb2.Feedback]) -> list[list]:
    seen: set[str] = set()
    cols: list[list] = [[] for _ in range(6)]
    for f in items:
        if f.event_id in seen:
            continue
        seen.add(f.event_id)
        values = (f.event_id, f.product_key_id, f.request_id, _when(f.occurred_at),
                  f.rating, f.comment)
        for col, v in zip(cols, values):
            col.append(v)
    return cols


def next_offsets(positions: Sequence[Position]) -> tuple[list[str], list[int], list[int]]:
    best: dict[tuple[str, int], int] = {}
    for p in positions:
        key = (p.topic, p.partition)
        best[key] = max(best.get(key, -1), p.offset + 1)
    topics, parts, offsets = [], [], []
    for (t, p), o in sorted(best.items()):
        topics.append(t)
        parts.append(p)
        offsets.append(o)
    return topics, parts, offsets


class MetricsSink(Service):
    """Owns the PostgreSQL pool of the worker and applies batches transactionally."""

    def __init__(self, dsn: str, consumer_group: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._dsn = dsn
        self._group = consumer_group
        self.pool: asyncpg.Pool | None = None

    async def on_start(self) -> None:
        self.pool = await db.create_pool(self._dsn, min_size=1, max_size=4)

    async def on_stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        assert self.pool is not None
        rows = await self.pool.fetch(STORED_OFFSETS, self._group)
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def write_turns(self, records: Sequence[tuple[Position, events_pb2.ChatTurn | None]]) -> Applied:
        return await self._write(records, WRITE_TURNS, turn_columns)

    async def write_feedback(self, records: Sequence[tuple[Position, events_pb2.Feedback | None]]) -> Applied:
        return await self._write(records, WRITE_FEEDBACK, feedback_columns)

    async def _write(self, records, statement: str, columns) -> Applied:
        """One transaction: drop what the stored offsets say was applied, write the rest with one
        statement, advance the offsets. Records with no event (dead letters) only advance offsets."""
        assert self.pool is not None
        positions = [p for p, _ in records]
        topics, parts, offsets = next_offsets(positions)
        async with self.pool.acquire() as conn, conn.transaction():
            stored = {
                (r["topic"], r["partition"]): r["next_offset"]
                for r in await conn.fetch(LOCK_OFFSETS, self._group, topics, parts)
            }
            fresh = [
                event for pos, event in records
                if event is not None and pos.offset >= stored.get((pos.topic, pos.partition), 0)
            ]
            cols = columns(fresh)
            if cols[0]:
                await conn.execute(statement, *cols)
            if positions:
                await conn.execute(SAVE_OFFSETS, self._group, topics, parts, offsets)
        minutes = {(e.product_key_id, _minute(e.occurred_at)) for e in fresh}
        return Applied(len(fresh), len(records) - len(fresh), minutes)


def _minute(ts) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds - ts.seconds % 60)


@dataclass(frozen=True)
class Applied:
    """What one batch changed: events applied, events skipped as already applied, (key, minute)s touched."""

    applied: int
    skipped: int
    minutes: set[tuple[str, datetime]]
