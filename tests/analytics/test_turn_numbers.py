"""Turns with numbers no metric may hold (negative or non-finite timings and cost, negative tokens, a time
no Timestamp holds) are dead-lettered with a reason naming the field, never stored or counted."""

from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaConsumer

from services.analytics.stream.apply import BatchApplier, Record
from services.analytics.stream.decode import DeadLetter, decode_feedback, decode_turn
from services.analytics.stream.rows import TurnBatch
from services.analytics.stream.sink import MetricsSink, Position
from services.common.kafka import new_event_id
from services.common.pb.parley.v1 import events_pb2
from tests.analytics.test_sink import make_turn
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for


def _spoil(turn: events_pb2.ChatTurn, how: str) -> events_pb2.ChatTurn:
    if how == "nan total":
        turn.timings.total_ms = math.nan
    elif how == "negative ttft":
        turn.timings.ttft_ms = -1.0
    elif how == "inf search":
        turn.timings.search_ms = math.inf
    elif how == "-inf llm":
        turn.timings.llm_ms = -math.inf
    elif how == "negative tokens":
        turn.usage.completion_tokens = -5
    elif how == "nan cost":
        turn.cost_usd = math.nan
    elif how == "negative cost":
        turn.cost_usd = -0.01
    elif how == "nanos":
        turn.occurred_at.nanos = 1_000_000_000
    elif how == "negative nanos":
        turn.occurred_at.nanos = -1
    elif how == "seconds":
        turn.occurred_at.seconds = 400_000_000_000
    return turn


# How each spoiled turn is named in its dead letter's reason.
SPOILED = {
    "nan total": "timings.total_ms nan", "negative ttft": "timings.ttft_ms -1.0", "inf search": "timings.search_ms inf",
    "-inf llm": "timings.llm_ms -inf", "negative tokens": "usage.completion_tokens -5", "nan cost": "cost_usd nan",
    "negative cost": "cost_usd -0.01", "nanos": "occurred_at.nanos 1000000000", "negative nanos": "occurred_at.nanos -1",
    "seconds": "occurred_at.seconds 400000000000",
}



async def _dead_letters(consumer, key_id: str, want: int, timeout: float = 30.0) -> list:
    """The dead letters of `key_id` the consumer reads, once there are `want` (or at the timeout)."""
    letters = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(letters) < want:
        for msgs in (await consumer.getmany(timeout_ms=500)).values():
            letters.extend(m for m in msgs if m.key == key_id.encode())
    return letters


async def test_a_batch_with_spoiled_turns_stores_the_others_and_dead_letters_each_spoiled_one(pg, settings, sink_pool):
    key_id = f"numbers-{uuid.uuid4().hex[:8]}"
    turns = [make_turn(key_id, 1.0 + i) for i in range(60)]
    spoiled = {5 * (i + 1): how for i, how in enumerate(SPOILED)}   # offsets 5, 10, ... 50
    for i, how in spoiled.items():
        _spoil(turns[i], how)
    turns[0].timings.total_ms = 0.0   # zero is a valid time and cost
    turns[0].cost_usd = 0.0
    letters: list[DeadLetter] = []

    async def collect(letter: DeadLetter) -> None:
        letters.append(letter)

    sink = MetricsSink(settings.postgres_dsn, f"numbers-test-{uuid.uuid4().hex[:6]}")
    sink.pool = sink_pool
    records = [Record(Position("numbers", 1, i), t.product_key_id.encode(), t.SerializeToString(), decode_turn(
        t.SerializeToString())) for i, t in enumerate(turns)]
    prepared = TurnBatch()   # as the worker builds it while the batch is assembled: adding never raises
    for i in range(0, len(records), 16):
        prepared.add([r.event for r in records[i:i + 16]])
    assert prepared.invalid is not None
    applied = await BatchApplier(sink.write_turns, collect).apply(records, prepared)

    assert sorted(letter.offset for letter in letters) == sorted(spoiled)
    for letter in letters:
        assert SPOILED[spoiled[letter.offset]] in letter.reason, letter.reason
        assert letter.value == turns[letter.offset].SerializeToString()
    assert applied.applied == 60 - len(spoiled)
    stored = await pg.fetchrow(
        "SELECT count(*) AS n, min(total_ms) AS low, bool_and(total_ms = total_ms AND cost_usd >= 0) AS sane"
        " FROM conversations WHERE product_key_id = $1", key_id)
    assert (stored["n"], stored["low"], stored["sane"]) == (60 - len(spoiled), 0.0, True)
    assert await pg.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key_id) == 60 - len(spoiled)
    assert await sink.stored_offsets() == {("numbers", 1): 60}


def test_a_valid_turn_is_not_invalid_and_feedback_with_a_time_out_of_range_is_refused_at_decoding():
    batch = TurnBatch()
    batch.add([make_turn("k", 0.0), make_turn("k", 1e9)])
    assert batch.invalid is None and len(batch.rows) == 2
    for nanos, seconds in ((1_000_000_000, 0), (-1, 0), (0, -70_000_000_000), (0, 300_000_000_000)):
        feedback = events_pb2.Feedback(event_id="e", product_key_id="k", rating=1)
        feedback.occurred_at.seconds, feedback.occurred_at.nanos = seconds, nanos
        try:
            decode_feedback(feedback.SerializeToString())
        except ValueError as exc:
            assert "occurred_at" in str(exc)
        else:
            raise AssertionError(f"accepted nanos={nanos} seconds={seconds}")


async def test_the_worker_dead_letters_a_turn_with_a_nan_timing_and_counts_the_next(services, settings, pg):
    key_id = f"nan-{uuid.uuid4().hex[:8]}"
    bad = _spoil(now_turn(key_id), "nan total")
    negative = _spoil(now_turn(key_id), "negative tokens")
    p = await producer(settings)
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for turn in (bad, negative, now_turn(key_id), now_turn(key_id)):
            await p.send_and_wait(settings.topic("chat_turns"), turn.SerializeToString(), key=key_id.encode())
        mine = await _dead_letters(consumer, key_id, 2)
        assert sorted(m.value for m in mine) == sorted([bad.SerializeToString(), negative.SerializeToString()])
        reasons = " ".join(dict(m.headers)["reason"].decode() for m in mine)
        assert "timings.total_ms nan" in reasons and "usage.completion_tokens -5" in reasons
        assert await wait_for(lambda: _counted(pg, key_id, (2, 2)))
    finally:
        await consumer.stop()
        await p.stop()


async def _counted(pg, key_id: str, expected: tuple[int, int]) -> bool:
    return await count_turns(pg, key_id) == expected


async def test_the_worker_dead_letters_turns_and_feedback_stamped_far_ahead_of_its_clock(services, settings, pg):
    """A turn and a feedback stamped 400 days ahead would be counted in a minute no query reads yet: both
    are dead-lettered, the reason naming occurred_at; a turn 5 minutes ahead (within the default 10 of
    PARLEY_STREAM_MAX_AHEAD_SECONDS) is stored and counted, as is the turn after them."""
    key_id = f"ahead-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    far = now_turn(key_id, when=now + timedelta(days=400))
    near = now_turn(key_id, when=now + timedelta(minutes=5))
    feedback = events_pb2.Feedback(event_id=new_event_id(), product_key_id=key_id, request_id=near.request_id,
                                   rating=-1)
    feedback.occurred_at.FromDatetime(now + timedelta(days=400))
    p = await producer(settings)
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await p.send_and_wait(settings.topic("feedback"), feedback.SerializeToString(), key=key_id.encode())
        for turn in (far, near, now_turn(key_id)):
            await p.send_and_wait(settings.topic("chat_turns"), turn.SerializeToString(), key=key_id.encode())
        mine = {m.value: dict(m.headers) for m in await _dead_letters(consumer, key_id, 2)}
        assert set(mine) == {far.SerializeToString(), feedback.SerializeToString()}
        for value, headers in mine.items():
            reason = headers["reason"].decode()
            assert "occurred_at" in reason and "ahead of the worker's clock" in reason, reason
        assert mine[feedback.SerializeToString()]["source-topic"].decode() == settings.topic("feedback")
        assert await wait_for(lambda: _counted(pg, key_id, (2, 2)))
    finally:
        await consumer.stop()
        await p.stop()
    assert await pg.fetchval("SELECT count(*) FROM feedback_events WHERE product_key_id = $1", key_id) == 0
    assert await pg.fetchval("SELECT max(minute) FROM metrics_minute WHERE product_key_id = $1",
                             key_id) == near.occurred_at.ToDatetime(tzinfo=timezone.utc).replace(second=0, microsecond=0)
