"""A worker whose clock is behind: a turn stamped far ahead of the worker's clock but not of its Kafka
record's timestamp (the producer's time) is stored; one stamped far ahead of its record is dead-lettered."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import DeadLetter, decode_turn
from services.analytics.stream.progress import Progress
from services.analytics.stream.sink import MetricsSink
from services.common.kafka import ensure_topics
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for


async def test_a_turn_ahead_of_the_workers_clock_but_not_of_its_record_is_stored(stack, settings, pg, sink_pool):
    key_id = f"skew-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.skew-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    ahead = datetime.now(timezone.utc) + timedelta(minutes=20)
    produced_then = now_turn(key_id, when=ahead)        # the producer's clock says 20 minutes later too
    stamped_ahead = now_turn(key_id, when=ahead)        # 20 minutes ahead of the time it was produced
    after = now_turn(key_id)
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
        await p.send_and_wait(topic, produced_then.SerializeToString(), key=key_id.encode(),
                              timestamp_ms=int(ahead.timestamp() * 1000))
        await p.send_and_wait(topic, stamped_ahead.SerializeToString(), key=key_id.encode())
        await p.send_and_wait(topic, after.SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()
    await consumer.start()
    try:
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (2, 2)), timeout=60), await count_turns(pg, key_id)
    finally:
        await consumer.stop()
    stored = {r["event_id"] for r in await pg.fetch("SELECT event_id FROM conversations WHERE product_key_id = $1",
                                                     key_id)}
    assert stored == {produced_then.event_id, after.event_id}
    assert [(lt.offset, lt.value) for lt in letters] == [(1, stamped_ahead.SerializeToString())]
    assert "occurred_at" in letters[0].reason and "ahead of the worker's clock" in letters[0].reason


async def _is(awaitable, expected):
    return (await awaitable) == expected
