"""The minutely summaries against real PostgreSQL and Kafka: a minute changed while its summary is being
published is published again, and one the broker refuses stays to be published."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.analytics.stream.minutely import MinutelySummaries
from services.analytics.stream.sink import MetricsSink, Position
from services.common.kafka import ensure_topics
from tests.analytics.test_stream import now_turn, producer, small_topic


async def _summaries(settings, topic: str, key: bytes) -> list[dict]:
    """The summaries of `key` on the one-partition `topic`, all of them, in order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found = []
        while await consumer.position(tp) < end:
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                found += [json.loads(m.value) for m in msgs if m.key == key]
        return found
    finally:
        await consumer.stop()


async def test_a_minute_changed_while_its_summary_is_published_is_published_again(stack, settings, sink_pool):
    """A late batch for the minute commits after the summary's rows were read: its mark is made while
    the minute is still marked. The minute was unmarked after the send, taking that mark with it, and
    the stale summary (1 turn) was the last for good; now the next round publishes 2 turns."""
    key_id = f"minutely-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('metrics_minutely')}.race-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    minute = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    sink = MetricsSink(settings.postgres_dsn, f"minutely-test-{uuid.uuid4().hex[:6]}")
    sink.pool = sink_pool
    offsets = iter(range(100))

    async def write_turn() -> set:
        turn = now_turn(key_id, when=minute + timedelta(seconds=20))
        return (await sink.write_turns([(Position("minutely", 0, next(offsets)), turn)])).minutes

    p = await producer(settings)
    late = []

    async def send(key: bytes, value: bytes):
        if not late:    # the summary's rows were read: a late batch commits and marks its minutes
            late.append(await write_turn())
            summaries.mark(late[0])
        return await p.send(topic, value, key=key)

    summaries = MinutelySummaries(sink_pool.fetchrow, send)
    try:
        summaries.mark(await write_turn())
        await summaries.publish()
        await summaries.publish()
    finally:
        await p.stop()
    assert late == [{(key_id, minute)}]
    published = await _summaries(settings, topic, key_id.encode())
    assert [(s["minute"], s["turns"]) for s in published] == [(minute.isoformat(), 1), (minute.isoformat(), 2)]
    assert not summaries.dirty


async def test_a_summary_the_broker_refuses_stays_to_be_published(stack, settings, sink_pool):
    """The topic takes messages of 100 bytes at most: the broker refuses the summary after the producer
    took it. The minute is marked again, not dropped as published."""
    key_id = f"refused-{uuid.uuid4().hex[:8]}"
    topic = await small_topic(settings, f"{settings.topic('metrics_minutely')}.small-{uuid.uuid4().hex[:6]}", 100)
    minute = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    sink = MetricsSink(settings.postgres_dsn, f"minutely-test-{uuid.uuid4().hex[:6]}")
    sink.pool = sink_pool
    turn = now_turn(key_id, when=minute + timedelta(seconds=20))
    p = await producer(settings)
    try:
        summaries = MinutelySummaries(sink_pool.fetchrow, lambda key, value: p.send(topic, value, key=key))
        summaries.mark((await sink.write_turns([(Position("refused", 0, 0), turn)])).minutes)
        await summaries.publish()
    finally:
        await p.stop()
    assert summaries.dirty == {(key_id, minute)}


async def test_the_owed_summaries_stay_bounded_while_publishing_fails(caplog):
    """Consumption goes on while every send fails (the topic missing): the owed (key, minute)s stop at
    the bound, the oldest minutes are the ones dropped, counted, and said once in the log."""
    from services.analytics.stream.minutely import SUMMARIES_DROPPED

    async def fetchrow(*_args):
        return {"total_hist": None, "by_strategy_model": None}

    async def send(_key: bytes, _value: bytes):
        raise RuntimeError("UnknownTopicOrPartitionError")

    summaries = MinutelySummaries(fetchrow, send, max_dirty=1_000)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    dropped_before = SUMMARIES_DROPPED._value.get()
    with caplog.at_level("ERROR", logger="services.analytics.stream.minutely"):
        for m in range(600):            # ten hours of batches over 5 keys, a round of publishing after each
            summaries.mark({(f"k{k}", start + timedelta(minutes=m)) for k in range(5)})
            await summaries.publish(now=start + timedelta(minutes=m + 1))
    assert len(summaries.dirty) <= 1_000
    assert SUMMARIES_DROPPED._value.get() - dropped_before == 3_000 - len(summaries.dirty)
    kept = sorted(minute for _, minute in summaries.dirty)
    assert kept[-1] == start + timedelta(minutes=599) and kept[0] > start + timedelta(minutes=300)
    assert sum("dropped" in r.getMessage() for r in caplog.records) == 1
