"""The worker's own consumer against real Kafka and PostgreSQL: a writer that fails in the middle of a
batch goes back to the stored offsets, so nothing after the failure is stored or acknowledged early."""

from __future__ import annotations

import asyncio
import uuid

from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import DeadLetter, decode_turn
from services.analytics.stream.progress import Progress
from services.analytics.stream.sink import MetricsSink
from services.common.kafka import ensure_topics
from tests.analytics.test_stream import count_turns, now_turn, producer, wait_for


async def no_dead_letters(letter: DeadLetter) -> None:
    raise AssertionError(f"unexpected dead letter {letter}")


async def send_turns(settings, topic: str, turns) -> None:
    """The turns on `topic`, each keyed by its product key, acknowledged by the broker."""
    p = await producer(settings)
    try:
        for turn in turns:
            await p.send(topic, turn.SerializeToString(), key=turn.product_key_id.encode())
        await p.flush()
    finally:
        await p.stop()


def turns_consumer(settings, group: str, topic: str, sink: MetricsSink | None = None, *, write=None,
                   decode=decode_turn, batch=None, stored_offsets=None, progress: Progress | None = None,
                   **options) -> EventConsumer:
    """A stream worker's consumer of `topic`'s turns, written with `write` (else the sink's), with no
    dead letter expected and small fetches and batches unless `options` say otherwise."""
    route = Route(decode, BatchApplier(write or sink.write_turns, no_dead_letters), *([batch] if batch else []))
    return EventConsumer(
        bootstrap=settings.kafka_bootstrap, group_id=group, routes={topic: route},
        progress=progress or Progress(stall_seconds=60), stored_offsets=stored_offsets or sink.stored_offsets,
        lower_offset=sink.lower_offset if sink is not None else None, send_dead_letter=no_dead_letters,
        on_minutes=lambda _minutes: None,
        **{"batch_size": 50, "fetch_max_bytes": 1 << 20, "partition_fetch_bytes": 1 << 16,
           "session_timeout_seconds": 10, **options},
    )


async def test_a_writer_that_crashes_mid_batch_resumes_from_the_stored_offsets(stack, settings, pg, sink_pool):
    key_id = f"crash-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.crash-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 2)
    turns = [now_turn(key_id, 1.0 + i) for i in range(300)]
    crash_on = turns[177].event_id
    calls = {"decoded": 0, "crashed": 0}

    def decode_crashing_once(value: bytes, latest: float):
        calls["decoded"] += 1
        turn = decode_turn(value, latest)
        if turn.event_id == crash_on and not calls["crashed"]:
            calls["crashed"] += 1
            raise RuntimeError("the writer crashes in the middle of a batch")
        return turn

    await send_turns(settings, topic, turns)

    group = f"consumer-test-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    progress = Progress(stall_seconds=60)
    consumer = turns_consumer(settings, group, topic, sink, decode=decode_crashing_once, progress=progress)
    await consumer.start()
    try:
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (300, 300)), timeout=60), await count_turns(pg, key_id)
        await asyncio.sleep(1.0)
        assert await count_turns(pg, key_id) == (300, 300)
    finally:
        await consumer.stop()
    assert calls["crashed"] == 1 and calls["decoded"] > 300  # the failed batch was read again
    stored = await sink.stored_offsets()
    assert sum(stored.values()) == 300 and {t for t, _ in stored} == {topic}


async def _is(awaitable, expected):
    return (await awaitable) == expected


async def test_under_light_load_a_writer_gathers_and_kafka_gets_the_latest_offsets(stack, settings, pg, sink_pool):
    """Turns arriving one by one are written in batches at most every MIN_WRITE_INTERVAL, not one
    write each; the offsets committed to Kafka (for lag monitoring) catch up with the stored ones;
    stopping ends the writers at once."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.analytics.stream.consumer import COMMIT_INTERVAL, MIN_WRITE_INTERVAL

    key_id = f"light-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.light-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    group = f"consumer-test-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    writes = []

    async def write(records, prepared=None):
        writes.append(len(records))
        return await sink.write_turns(records, prepared)

    consumer = turns_consumer(settings, group, topic, sink, write=write, batch_size=500)
    await consumer.start()
    p = await producer(settings)
    try:
        await p.send_and_wait(topic, now_turn(key_id, 1.0).SerializeToString(), key=key_id.encode())
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (1, 1)), timeout=60)
        writes.clear()
        started = asyncio.get_running_loop().time()
        for i in range(60):     # one turn every 25 ms for 1.5 s, each sent on its own
            await p.send_and_wait(topic, now_turn(key_id, 2.0 + i).SerializeToString(), key=key_id.encode())
            await asyncio.sleep(0.025)
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (61, 61)), timeout=60)
        elapsed = asyncio.get_running_loop().time() - started
        assert sum(writes) == 60
        assert len(writes) <= elapsed / MIN_WRITE_INTERVAL + 2, writes
        reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            tp = TopicPartition(topic, 0)

            async def committed_is_stored():
                return await reader.committed(tp) == 61
            assert await wait_for(committed_is_stored, timeout=COMMIT_INTERVAL + 10)
        finally:
            await reader.stop()
    finally:
        await p.stop()
        writers = [w.task for w in consumer.writers.values()]
        await consumer.stop()
    # A writer with nothing in flight ends when stopped (not cancelled after the grace period).
    assert writers and all(t.done() and not t.cancelled() for t in writers)


async def test_a_backlog_is_fetched_once_however_little_room_the_writer_has(stack, settings, pg, sink_pool,
                                                                             monkeypatch):
    """A writer with room for few records (batch size 50: 100 waiting at most) takes a backlog of 3,000
    turns that one fetch response holds: the rest of the response waits in the fetcher until the
    writer has room, and is not dropped and fetched again (as pausing the partition did: aiokafka drops
    a paused partition's fetched records). Every turn is stored once."""
    from aiokafka.consumer import fetcher

    key_id = f"backlog-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.backlog-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    await send_turns(settings, topic, (now_turn(key_id, 1.0 + i * 0.001) for i in range(3000)))

    responses = []      # the fetch responses that brought records of the topic
    made = fetcher.PartitionRecords.__init__

    def counting(self, tp, *args, **kwargs):
        if tp.topic == topic:
            responses.append(tp)
        made(self, tp, *args, **kwargs)
    monkeypatch.setattr(fetcher.PartitionRecords, "__init__", counting)

    group = f"consumer-test-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    consumer = turns_consumer(settings, group, topic, sink, fetch_max_bytes=16 << 20, partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (3000, 3000)), timeout=90), \
            await count_turns(pg, key_id)
    finally:
        await consumer.stop()
    # One response holds the backlog (about 0.5 MB); pausing fetched it again after every ~100 turns.
    assert 1 <= len(responses) <= 3, len(responses)


async def test_the_buffer_is_shared_by_the_partitions_writers():
    """The events a worker holds are bounded whatever the partitions it is given: each writer's batches
    and waiting records shrink to its share of the buffer, never below a batch (or a fetched slice)."""
    consumer = EventConsumer(
        bootstrap="127.0.0.1:9", group_id="share", routes={}, progress=Progress(stall_seconds=60),
        stored_offsets=None, lower_offset=None, send_dead_letter=None, on_minutes=None, batch_size=5000, fetch_max_bytes=1 << 20,
        partition_fetch_bytes=1 << 20, session_timeout_seconds=10, lagging_batches=4, buffer_events=240_000)
    for partitions, expected in ((4, (20_000, 10_000)), (12, (6_666, 6_666)), (100, (5_000, 1_000))):
        consumer.writers = dict.fromkeys(range(partitions))
        assert (consumer.max_batch(), consumer.max_queued()) == expected, partitions


async def test_offsets_applied_while_a_commit_is_in_flight_or_whose_commit_failed_are_committed(monkeypatch):
    """The last batch applied while Kafka still answered the previous commit was never committed
    (no later batch came to commit it) and lag monitoring saw a lag that was not there; a failed
    commit's offsets were dropped the same way. Both go in the next commit."""
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from services.analytics.stream import consumer as consumer_module
    from services.analytics.stream.apply import Record
    from services.analytics.stream.sink import Applied, Position

    monkeypatch.setattr(consumer_module, "COMMIT_INTERVAL", 0.01)
    tp = TopicPartition("turns", 0)

    class Kafka:
        def __init__(self):
            self.committed, self.calls, self.release = {}, 0, asyncio.Event()

        async def commit(self, offsets):
            self.calls += 1
            if self.calls == 1:
                await self.release.wait()       # Kafka is slow to answer the first commit
            if self.calls == 2:
                raise RuntimeError("the group is rebalancing")
            self.committed.update(offsets)

    consumer = EventConsumer(
        bootstrap="127.0.0.1:9", group_id="commits", routes={}, progress=Progress(stall_seconds=60),
        stored_offsets=None, lower_offset=None, send_dead_letter=None, on_minutes=lambda _minutes: None, batch_size=10,
        fetch_max_bytes=1 << 20, partition_fetch_bytes=1 << 20, session_timeout_seconds=10)
    consumer.consumer = kafka = Kafka()
    consumer.writers = {tp: None}

    def apply(offset):
        record = Record(Position(tp.topic, tp.partition, offset), None, None, None)
        consumer.applied(tp, [record], Applied(), 0.0)

    apply(9)
    await asyncio.sleep(0.05)
    assert kafka.calls == 1                     # in flight
    apply(19)                                   # applied meanwhile
    kafka.release.set()
    await asyncio.wait_for(consumer._committing, timeout=5)
    assert kafka.calls == 3                     # the second failed, the third carried its offsets
    assert kafka.committed == {tp: OffsetAndMetadata(20, "")}


async def test_two_workers_taking_over_each_other_s_partitions_count_every_turn_once(stack, settings, pg, sink_pool):
    """Turns sent steadily to 4 partitions while a second consumer joins the group (the partitions are
    shared) and the first then leaves (the second takes them all): every turn is stored and counted
    once, with writers whose share of a small buffer (600 events) keeps them taking a few records at a time."""
    from services.analytics.stream.rows import TurnBatch

    key_id = f"rebalance-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.rebalance-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 4)
    group = f"consumer-test-{uuid.uuid4().hex[:6]}"

    def worker() -> EventConsumer:
        sink = MetricsSink(settings.postgres_dsn, group)
        sink.pool = sink_pool
        return turns_consumer(settings, group, topic, sink, batch=TurnBatch, session_timeout_seconds=6,
                              buffer_events=600)

    p = await producer(settings)

    async def send_all() -> None:
        for i in range(4000):     # about 1,000 a second, over 20 Kafka keys (all 4 partitions)
            await p.send(topic, now_turn(key_id, 1.0 + i * 0.001).SerializeToString(), key=f"k{i % 20}".encode())
            if i % 100 == 99:
                await asyncio.sleep(0.1)
        await p.flush()

    async def stored_at_least(n: int) -> bool:
        return (await count_turns(pg, key_id))[0] >= n

    async def shared() -> bool:
        return bool(first.writers) and bool(second.writers) and len(first.writers) + len(second.writers) == 4

    sending = asyncio.ensure_future(send_all())
    first, second = worker(), worker()
    await first.start()
    try:
        assert await wait_for(lambda: stored_at_least(300), timeout=60)
        await second.start()
        assert await wait_for(shared, timeout=60), (list(first.writers), list(second.writers))
        assert await wait_for(lambda: stored_at_least(2500), timeout=60)
        await first.stop()

        async def second_has_all() -> bool:
            return len(second.writers) == 4
        assert await wait_for(second_has_all, timeout=60), list(second.writers)
        await sending
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (4000, 4000)), timeout=90), \
            await count_turns(pg, key_id)
        await asyncio.sleep(1.0)
        assert await count_turns(pg, key_id) == (4000, 4000)
    finally:
        sending.cancel()
        await p.stop()
        await second.stop()
        await first.stop()


async def test_records_retention_deleted_past_the_stored_offset_are_logged_and_counted_lost(stack, settings, caplog):
    """The stored offset says 2, but the log now starts at 6 (retention, or an operator's delete-records):
    records 2-5 were never applied. The writer says so (an error naming topic, partition and count, and
    parley_worker_events_lost_total) and goes on from 6."""
    import logging

    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from prometheus_client import REGISTRY

    from services.analytics.stream.sink import Applied

    key_id = f"gap-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.gap-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    await send_turns(settings, topic, (now_turn(key_id, 1.0 + i) for i in range(10)))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=6)})
    finally:
        await admin.close()

    written: list[int] = []

    async def write(records, prepared=None) -> Applied:
        written.extend(position.offset for position, _ in records)
        return Applied(applied=len(records))

    async def stored_offsets() -> dict[tuple[str, int], int]:
        return {(topic, 0): 2}

    caplog.set_level(logging.ERROR, logger="services.analytics.stream.consumer")
    before = REGISTRY.get_sample_value("parley_worker_events_lost_total", {"topic": topic}) or 0.0
    consumer = turns_consumer(settings, f"consumer-test-{uuid.uuid4().hex[:6]}", topic, write=write,
                              stored_offsets=stored_offsets)
    await consumer.start()
    try:
        async def all_written() -> bool:
            return written == [6, 7, 8, 9]
        assert await wait_for(all_written, timeout=60), written
    finally:
        await consumer.stop()
    assert REGISTRY.get_sample_value("parley_worker_events_lost_total", {"topic": topic}) == before + 4
    assert any(topic in r.getMessage() and "[0]" in r.getMessage() and " 4 " in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR), [r.getMessage() for r in caplog.records]


async def test_a_stored_offset_past_the_partitions_end_is_lowered_and_the_partition_read_from_its_start(
        stack, settings, pg, sink_pool, caplog):
    """PostgreSQL says 1,000 records of the partition were applied, but it holds 3 (the topic deleted and
    made again, or Kafka's data lost while PostgreSQL kept its own). A seek to 1,000 is out of range,
    aiokafka went back to the start by itself, and the sink dropped every record below 1,000 as applied,
    with a lag of 0. Now the writer says so (an error and parley_worker_offset_resets_total), lowers the
    stored offset and reads the partition from its start: the 3 turns are stored and counted."""
    import logging

    from prometheus_client import REGISTRY

    key_id = f"recreated-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.recreated-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    group = f"consumer-test-{uuid.uuid4().hex[:6]}"
    await pg.execute("INSERT INTO stream_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 1000)",
                     group, topic)
    await send_turns(settings, topic, (now_turn(key_id, 1.0 + i) for i in range(3)))

    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    caplog.set_level(logging.ERROR, logger="services.analytics.stream.consumer")
    before = REGISTRY.get_sample_value("parley_worker_offset_resets_total", {"topic": topic}) or 0.0
    consumer = turns_consumer(settings, group, topic, sink)
    await consumer.start()
    try:
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (3, 3)), timeout=30), await count_turns(pg, key_id)
    finally:
        await consumer.stop()
    assert await sink.stored_offsets() == {(topic, 0): 3}
    assert REGISTRY.get_sample_value("parley_worker_offset_resets_total", {"topic": topic}) == before + 1
    assert any(topic in r.getMessage() and "1000" in r.getMessage() and "past the partition's end" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR), [r.getMessage() for r in caplog.records]


async def test_a_worker_whose_writes_are_held_past_the_poll_interval_stays_in_its_group(
        stack, settings, pg, sink_pool, monkeypatch):
    """Every writer full while PostgreSQL is away, for longer than max_poll_interval: aiokafka leaves the
    group when nothing polls, and joins again only on a poll, which a fetch without room never made (the
    partitions' writers were dropped with the assignment, so nothing ever polled again). The fetch keeps
    polling for a record now and then: once writes go through again, every turn is stored."""
    from services.analytics.stream import consumer as consumer_module

    monkeypatch.setattr(consumer_module, "KEEP_POLLING_SECONDS", 0.5, raising=False)
    key_id = f"held-{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic('chat_turns')}.held-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [topic], 1)
    group = f"consumer-test-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    writable = asyncio.Event()

    async def write(records, prepared=None):
        await writable.wait()                    # as while PostgreSQL is away
        return await sink.write_turns(records, prepared)

    consumer = turns_consumer(settings, group, topic, sink, write=write, batch_size=10, session_timeout_seconds=6)
    consumer._config["max_poll_interval_ms"] = 3000
    p = await producer(settings)
    try:
        for i in range(200):
            await p.send(topic, now_turn(key_id, 1.0 + i).SerializeToString(), key=key_id.encode())
        await p.flush()
        await consumer.start()
        await asyncio.sleep(8)                   # past the poll interval, every writer full
        writable.set()
        assert await wait_for(lambda: _is(count_turns(pg, key_id), (200, 200)), timeout=60), \
            await count_turns(pg, key_id)
    finally:
        writable.set()
        await p.stop()
        await consumer.stop()
