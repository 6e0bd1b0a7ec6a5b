"""Writes a batch of events to PostgreSQL in one transaction, together with the consumed offsets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import asyncpg
from mode import Service

from services.analytics.queries import HAS_COUNTS
from services.analytics.settings import PENDING_FEEDBACK_HORIZON_SECONDS
from services.analytics.stream.progress import BATCHES_WRITTEN_AGAIN, FEEDBACK_UNATTRIBUTED
from services.analytics.stream.rows import (
    SOURCE_SEPARATOR,
    STAGE_COLUMNS,
    MinuteTotals,
    RawGroup,
    TurnBatch,
    feedback_columns,
    metrics_columns,
    minute_of,
    stored_groups,
    storable,
    turn_rows,
)
from services.common import db
from services.common.pb.parley.v1 import events_pb2

logger = logging.getLogger(__name__)

# Turns are COPYed into a per-connection staging table (no indexes, no WAL; created once when the
# pool opens the connection, emptied by every commit), then moved into conversations by one
# INSERT ... SELECT: COPY is the fastest way in.
STAGE_TURNS = """
CREATE TEMP TABLE IF NOT EXISTS turn_rows_stage (
    event_id text, product_key_id text, session_id text, request_id text, occurred_us bigint, message text,
    answer text, strategy text, model text, cache_status text, error_code text, total_ms float8, ttft_ms float8,
    search_ms float8, llm_ms float8, tokens_in int, tokens_out int, cost_usd float8, source_ids text
) ON COMMIT DELETE ROWS
"""
# A batch is first moved as if none of its events were stored before, which is nearly always so: a
# plain INSERT, whose primary key refuses an event id stored before (UniqueViolation, the
# transaction rolls back). Only then is the batch written again with ON CONFLICT (event_id) DO
# NOTHING, and only the ids RETURNING names are counted into metrics. ON CONFLICT costs on every
# row (a look-up of the key before the insert, a speculative-insertion lock, the check again on
# insert) and RETURNING sends every id back: together about a fifth of PostgreSQL's CPU per turn.
# In event id order, the primary key's inserts go through its leaves in order: 10 % less CPU per
# row of the INSERT than in arrival order, the sort (in memory: a batch of 5,000 is about 2 MB)
# included.
INSERT_TURNS = f"""
INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer,
                           strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
                           tokens_in, tokens_out, cost_usd, source_ids)
SELECT event_id, product_key_id, session_id, request_id,
       timestamptz 'epoch' + occurred_us * interval '1 microsecond', message, answer,
       strategy, model, cache_status, error_code, total_ms, ttft_ms, search_ms, llm_ms,
       tokens_in, tokens_out, cost_usd, coalesce(string_to_array(nullif(source_ids, ''), chr({ord(SOURCE_SEPARATOR)})), '{{}}')
FROM turn_rows_stage
ORDER BY event_id
"""
INSERT_UNSTORED_TURNS = INSERT_TURNS + "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"

# One row per (key, minute, strategy, model), summed in Python (rows.turn_rows).
UPSERT_METRICS = """
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, turns, cache_hits, errors, no_answers,
                                 tokens_in, tokens_out, total_hist, ttft_hist, search_hist, llm_hist)
SELECT k, mi, s, mo, t, ch, e, na, ti, tout, th::bigint[], tt::bigint[], sh::bigint[], lh::bigint[]
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[])
    AS u(k, mi, s, mo, t, ch, e, na, ti, tout, th, tt, sh, lh)
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

# The end of both feedback statements: their grouped counts added to the (key, minute, strategy, model) rows.
_ADD_FEEDBACK_COUNTS = """GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
ON CONFLICT (product_key_id, minute, strategy, model) DO UPDATE SET
    feedback_up = m.feedback_up + excluded.feedback_up,
    feedback_down = m.feedback_down + excluded.feedback_down,
    updated_at = now()
"""

# The stored turn a feedback event `{f}` rates, one row at most: two stored turns may share a request
# id (each event has its own id), and a join to both counted one vote twice. The answered one is taken
# (feedback is given to answered turns), then the earliest. request_id's hash index finds the few rows.
_RATED_TURN = """(
    SELECT c.strategy, c.model FROM conversations c
    WHERE c.request_id = {f}.request_id AND c.product_key_id = {f}.product_key_id
    ORDER BY c.error_code <> '', c.occurred_at, c.event_id
    LIMIT 1
)"""

# Feedback is counted under the strategy and model of the turn it rates; one whose turn is not
# stored yet is counted under UNKNOWN and marked pending (ATTRIBUTE_PENDING_FEEDBACK moves it later).
WRITE_FEEDBACK = """
WITH batch AS (
    SELECT b.*, c.strategy, c.model
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
        AS b(event_id, product_key_id, request_id, occurred_at, rating, comment)
    LEFT JOIN LATERAL """ + _RATED_TURN.format(f="b") + """ c ON true
), inserted AS (
    INSERT INTO feedback_events (event_id, product_key_id, request_id, occurred_at, rating, comment, pending)
    SELECT event_id, product_key_id, request_id, occurred_at, rating, comment, strategy IS NULL FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, feedback_up, feedback_down)
SELECT b.product_key_id, date_trunc('minute', b.occurred_at),
       coalesce(b.strategy, 'UNKNOWN'), coalesce(b.model, 'unknown'),
       count(*) FILTER (WHERE b.rating > 0), count(*) FILTER (WHERE b.rating < 0)
FROM batch b
JOIN inserted USING (event_id)
""" + _ADD_FEEDBACK_COUNTS

# Pending feedback whose turn is stored now: its counts leave UNKNOWN for the turn's strategy and
# model, in the statement that clears the mark (a second worker running it waits on the row locks,
# then finds the rows no longer pending). Returns the (key, minute) rows it changed.
ATTRIBUTE_PENDING_FEEDBACK = """
WITH moved AS (
    UPDATE feedback_events f SET pending = false
    FROM (SELECT p.event_id, c.strategy, c.model
          FROM feedback_events p CROSS JOIN LATERAL """ + _RATED_TURN.format(f="p") + """ c
          WHERE p.pending) c
    WHERE f.event_id = c.event_id AND f.pending
    RETURNING f.product_key_id, date_trunc('minute', f.occurred_at) AS minute, c.strategy, c.model, f.rating
), delta AS (
    SELECT product_key_id, minute, strategy, model,
           count(*) FILTER (WHERE rating > 0) AS up, count(*) FILTER (WHERE rating < 0) AS down
    FROM moved GROUP BY 1, 2, 3, 4
    UNION ALL
    SELECT product_key_id, minute, 'UNKNOWN', 'unknown',
           -count(*) FILTER (WHERE rating > 0), -count(*) FILTER (WHERE rating < 0)
    FROM moved GROUP BY 1, 2
)
INSERT INTO metrics_minute AS m (product_key_id, minute, strategy, model, feedback_up, feedback_down)
SELECT product_key_id, minute, strategy, model, sum(up), sum(down)
FROM delta
""" + _ADD_FEEDBACK_COUNTS + "RETURNING product_key_id, minute\n"

# The UNKNOWN rows of the (key, minute)s ATTRIBUTE_PENDING_FEEDBACK changed that it left with nothing in
# them (all their feedback moved to its turns): kept, each was a point of zeros in GetMetrics by strategy
# and an "UNKNOWN/unknown": 0 in its minute's summary. In the same transaction, after the statement that
# emptied them (a statement cannot delete the rows its own upsert changed); a feedback write adding to
# such a row meanwhile waits for the row lock, and then inserts the row again.
DELETE_EMPTIED_UNKNOWN = """
DELETE FROM metrics_minute m
USING unnest($1::text[], $2::timestamptz[]) AS u(product_key_id, minute)
WHERE m.product_key_id = u.product_key_id AND m.minute = u.minute AND m.strategy = 'UNKNOWN' AND m.model = 'unknown'
  AND NOT """ + HAS_COUNTS + """
"""

# Pending feedback older than the horizon whose turn never came (dead-lettered, or dropped by a full
# outbox): no longer looked for, its counts stay under UNKNOWN. Without it every attribution round
# read such feedback again, for good, and the rounds grew with time.
EXPIRE_PENDING_FEEDBACK = """
UPDATE feedback_events SET pending = false
WHERE pending AND occurred_at < now() - make_interval(secs => $1)
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

# A stored offset past its partition's end (the topic made again, Kafka's data lost while PostgreSQL
# kept its own) lowered to where the partition now starts: SAVE_OFFSETS never lowers one.
LOWER_OFFSET = """
UPDATE stream_offsets SET next_offset = $4, updated_at = now()
WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset > $4
"""

STORED_OFFSETS = "SELECT topic, partition, next_offset FROM stream_offsets WHERE consumer_group = $1"


class Position(NamedTuple):
    """Where a record is; a tuple, as one is made per event."""

    topic: str
    partition: int
    offset: int


@dataclass
class Applied:
    """What one batch changed: events applied, events skipped as already applied or dead-lettered,
    (key, minute)s touched."""

    applied: int = 0
    skipped: int = 0
    minutes: set[tuple[str, datetime]] = field(default_factory=set)

    def __add__(self, other: Applied) -> Applied:
        return Applied(self.applied + other.applied, self.skipped + other.skipped, self.minutes | other.minutes)


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


async def insert_turns(conn: asyncpg.Connection, turns: Sequence[events_pb2.ChatTurn]) -> set:
    """Inside the caller's transaction: the turns go into conversations and are counted into
    metrics_minute; returns the (key, minute)s they changed. Raises UniqueViolationError (and the
    transaction is lost) if one of them was stored before: then `insert_turns_skipping_stored` is the way."""
    batch = TurnBatch()
    batch.add(turns)
    return await insert_batch(conn, batch)


async def insert_batch(conn: asyncpg.Connection, batch: TurnBatch) -> set:
    """As insert_turns, the rows built beforehand (TurnBatch)."""
    if batch.invalid is not None:
        raise batch.invalid
    if not batch.rows:
        return set()
    await _stage(conn, batch)
    await conn.execute(INSERT_TURNS)
    return await _count(conn, batch.groups)


async def insert_turns_skipping_stored(conn: asyncpg.Connection, turns: Sequence[events_pb2.ChatTurn]) -> set:
    """As insert_turns, but the turns stored before (redelivered at new offsets) are skipped, and
    not counted."""
    batch = TurnBatch()
    batch.add(turns)
    if batch.invalid is not None:
        raise batch.invalid
    if not batch.rows:
        return set()
    await _stage(conn, batch)
    inserted = await conn.fetch(INSERT_UNSTORED_TURNS)
    raw = batch.groups
    if len(inserted) != len(batch.rows):  # some were stored before
        first_of = {}
        for t in turns:
            first_of.setdefault(storable(t.event_id), t)
        raw = turn_rows(first_of[r[0]] for r in inserted)[1]
    return await _count(conn, raw)


async def _stage(conn: asyncpg.Connection, batch: TurnBatch) -> None:
    await conn.copy_records_to_table("turn_rows_stage", records=_slices(batch.rows), columns=STAGE_COLUMNS)


# Rows asyncpg encodes for COPY between two turns of the event loop. Given a list, it encodes all of
# them at once (12 % of the worker's CPU in a profile under load, about 1.5 µs per row: a batch of
# 5,000 held the loop for 7 ms or more while the other partitions' writers waited to send their next
# statement); given an async iterator, it encodes each row as it comes.
COPY_SLICE = 500


async def _slices(rows: list[tuple]):
    for i in range(0, len(rows), COPY_SLICE):
        if i:
            await asyncio.sleep(0)
        for row in rows[i:i + COPY_SLICE]:
            yield row


async def _count(conn: asyncpg.Connection, raw: dict[RawGroup, MinuteTotals]) -> set:
    if not raw:
        return set()
    groups = stored_groups(raw)
    await conn.execute(UPSERT_METRICS, *metrics_columns(groups))
    return {(key_id, minute) for key_id, minute, _, _ in groups}


async def insert_feedback(conn: asyncpg.Connection, items: Sequence[events_pb2.Feedback]) -> set:
    cols = feedback_columns(items)
    if cols[0]:
        await conn.execute(WRITE_FEEDBACK, *cols)
    return {(storable(f.product_key_id), minute_of(f.occurred_at)) for f in items}


async def create_pool(dsn: str, max_size: int = 6) -> asyncpg.Pool:
    """The sink's pool: each connection gets the staging table when it opens, and is not reset on
    release (these connections set no session state, so the reset would be a round trip per batch
    for nothing; an open transaction is still rolled back by asyncpg)."""
    return await db.create_pool(dsn, min_size=0, max_size=max_size, init=_create_stage, reset_session=False)


async def _create_stage(conn: asyncpg.Connection) -> None:
    await conn.execute(STAGE_TURNS)


class MetricsSink(Service):
    """Owns the PostgreSQL pool of the worker and applies batches transactionally."""

    def __init__(self, dsn: str, consumer_group: str, *,
                 pending_horizon_seconds: float = PENDING_FEEDBACK_HORIZON_SECONDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self._dsn = dsn
        self._group = consumer_group
        self._pending_horizon = pending_horizon_seconds
        self.pool: asyncpg.Pool | None = None

    async def on_start(self) -> None:
        # Created lazily so a worker started while PostgreSQL is down waits instead of exiting.
        self.pool = await create_pool(self._dsn)

    async def on_shutdown(self) -> None:
        # After the children (the consumer and its writers) have stopped: they write through the pool.
        if self.pool is not None:
            await self.pool.close()

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        assert self.pool is not None
        rows = await self.pool.fetch(STORED_OFFSETS, self._group)
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def lower_offset(self, topic: str, partition: int, next_offset: int) -> None:
        assert self.pool is not None
        await self.pool.execute(LOWER_OFFSET, self._group, topic, partition, next_offset)

    async def write_turns(self, records: Sequence[tuple[Position, events_pb2.ChatTurn | None]],
                          prepared: TurnBatch | None = None) -> Applied:
        """`prepared`: the rows of the records' turns, built before the write (used when none of
        them is dropped by the stored offsets, i.e. nearly always)."""
        try:
            return await self._write(records, insert_turns, prepared)
        except asyncpg.UniqueViolationError:
            # An event of the batch was stored before, at another offset (a producer's retry):
            # the transaction rolled back; the batch again, skipping what is stored.
            BATCHES_WRITTEN_AGAIN.inc()
            return await self._write(records, insert_turns_skipping_stored)

    async def write_feedback(self, records: Sequence[tuple[Position, events_pb2.Feedback | None]],
                             prepared: None = None) -> Applied:
        return await self._write(records, insert_feedback)

    async def attribute_pending_feedback(self) -> set[tuple[str, datetime]]:
        """Moves the counts of feedback that came before its turn to the turn's strategy and model,
        once the turn is stored, and deletes the UNKNOWN rows that left empty; the (key, minute) rows
        changed. Then gives up on the pending feedback
        older than the horizon (EXPIRE_PENDING_FEEDBACK)."""
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(ATTRIBUTE_PENDING_FEEDBACK)
            if rows:
                await conn.execute(DELETE_EMPTIED_UNKNOWN, [r["product_key_id"] for r in rows],
                                   [r["minute"] for r in rows])
        expired = int((await self.pool.execute(EXPIRE_PENDING_FEEDBACK, self._pending_horizon)).split()[-1])
        if expired:
            FEEDBACK_UNATTRIBUTED.inc(expired)
            logger.info("%d feedback event(s) older than %.0f s whose turn was never stored: left under UNKNOWN",
                        expired, self._pending_horizon)
        return {(r["product_key_id"], r["minute"]) for r in rows}

    async def _write(self, records, insert, prepared: TurnBatch | None = None) -> Applied:
        """One transaction: drop what the stored offsets say was applied, write the rest, advance the
        offsets. Records with no event (dead letters) only advance offsets."""
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
            if not fresh:
                minutes = set()
            elif prepared is not None and prepared.events == len(fresh):  # the batch's turns, all of them
                minutes = await insert_batch(conn, prepared)
            else:
                minutes = await insert(conn, fresh)
            if positions:
                await conn.execute(SAVE_OFFSETS, self._group, topics, parts, offsets)
        return Applied(len(fresh), len(records) - len(fresh), minutes)
