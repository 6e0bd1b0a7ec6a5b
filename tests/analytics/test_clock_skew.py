"""How far ahead an event may be stamped is judged against the broker's clock: the turns topic keeps
LogAppendTime. A worker whose clock is behind stores live turns; a producer whose clock is ahead (its
records' CreateTime with it) is still caught; a topic that keeps CreateTime falls back to the worker's clock."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

from services.analytics.stream import consumer as consumer_module
from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import DeadLetter, decode_turn
from services.analytics.stream.progress import Progress
from services.analytics.stream.sink import MetricsSink
from services.common.kafka import ensure_topics
from services.common.settings import TOPIC_CONFIGS
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for


class _ClockBehind:
    """The time module as this worker sees it: its clock 20 minutes behind."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return time.time() - 1200


async def _consume(settings, pg, sink_pool, topic: str, key_id: str, sends: list[tuple], stored: int):
    letters: list[DeadLetter] = []

    async def dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    group = f"skew-test-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap, group_id=group,
        routes={topic: Route(decode_turn, BatchApplier(sink.write_turns, dead_letter))},
        progress=Progress(stall_seconds=60), stored_offsets=sink.stored_offsets, lower_offset=sink.lower_offset,
        send_dead_letter=dead_letter, on_minutes=lambda _m: None, batch_size=50, fetch_max_bytes=1 << 20,
        partition_fetch_bytes=1 << 16, session_timeout_seconds=10, max_ahead_seconds=600,
    )
    p = await producer(settings)
    try:
        for turn, timestamp_ms in sends:
            await p.send_and_wait(topic, turn.SerializeToString(), key=key_id.encode(), timestamp_ms=timestamp_ms)
    finally:
        await p.stop()
    await consumer.start()
    try:
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (stored, stored)), timeout=60), \
            await count_turns(pg, key_id)
        assert await wait_for(lambda: _true(len(letters) == len(sends) - stored), timeout=30), letters
    finally:
        await consumer.stop()
    rows = {r["event_id"] for r in await pg.fetch("SELECT event_id FROM conversations WHERE product_key_id = $1",
                                                  key_id)}
    return rows, letters


async def test_the_broker_clock_decides_how_far_ahead_a_turn_may_be(stack, settings, pg, sink_pool, monkeypatch):
    key_id = f"skew-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.skew-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1, configs={topic: TOPIC_CONFIGS["chat_turns"]})
    monkeypatch.setattr(consumer_module, "time", _ClockBehind())
    ahead = datetime.now(timezone.utc) + timedelta(minutes=20)
    live = now_turn(key_id)                              # the worker's clock says it is 20 minutes ahead
    from_a_fast_clock = now_turn(key_id, when=ahead)     # its producer's clock, and CreateTime, 20 minutes ahead
    rows, letters = await _consume(settings, pg, sink_pool, topic, key_id,
                                   [(live, None), (from_a_fast_clock, int(ahead.timestamp() * 1000))], stored=1)
    assert rows == {live.event_id}
    assert [(lt.offset, lt.value) for lt in letters] == [(1, from_a_fast_clock.SerializeToString())]
    assert "occurred_at" in letters[0].reason


async def test_on_a_topic_that_keeps_createtime_the_workers_clock_decides(stack, settings, pg, sink_pool):
    key_id = f"skew-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.create-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    ahead = datetime.now(timezone.utc) + timedelta(minutes=20)
    live, from_a_fast_clock = now_turn(key_id), now_turn(key_id, when=ahead)
    rows, letters = await _consume(settings, pg, sink_pool, topic, key_id,
                                   [(from_a_fast_clock, int(ahead.timestamp() * 1000)), (live, None)], stored=1)
    assert rows == {live.event_id}
    assert [lt.offset for lt in letters] == [0] and "ahead of the worker's clock" in letters[0].reason


async def _is(awaitable, expected):
    return (await awaitable) == expected


async def _true(value: bool) -> bool:
    return value
