"""Dead letters of records near Kafka's message limit, against the real broker: cut to a bound with the
original's size and hash, and a dead letter Kafka refuses for good given up instead of retried for ever."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY

from services.analytics.stream.app import StreamDeadLetters
from services.analytics.stream.apply import BatchApplier
from services.analytics.stream.consumer import EventConsumer, Route
from services.analytics.stream.decode import decode_turn
from services.analytics.stream.progress import Progress
from services.analytics.stream.sink import MetricsSink
from services.common.kafka import DeadLetters, ensure_topics
from tests.analytics.test_stream import count_turns, now_turn, small_topic, wait_for

CUT = 512 * 1024
NEAR_ONE_MIB = 1_048_300


def _huge_turn(key_id: str) -> bytes:
    """A ChatTurn without event_id (undecodable for the worker) whose message has NEAR_ONE_MIB characters:
    within the broker's message limit, over the producer's 1 MiB request limit once a dead letter's
    headers are added."""
    huge = now_turn(key_id, message="m" * NEAR_ONE_MIB)
    huge.event_id = ""
    return huge.SerializeToString()


async def _letters(bootstrap: str, topic: str, want: int, timeout: float = 60.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=2 << 20)
    await consumer.start()
    seen: list = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(seen) < want and loop.time() < end:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                seen += messages
    finally:
        await consumer.stop()
    return seen


async def test_a_dead_letter_over_the_bound_is_cut_and_says_the_original_size_and_hash(stack, settings):
    dead = f"{settings.topic('deadletter')}.cut-{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings.kafka_bootstrap, [dead], 1)
    value = _huge_turn("k-cut")
    letters = DeadLetters(settings.kafka_bootstrap, dead, client_id="test-dead-letters")
    try:
        assert await letters.send(value, "ChatTurn without event_id", "parley.chat.turns.v1", 3, 42, key=b"k-cut")
        assert await letters.send(b"small", "not protobuf", "parley.chat.turns.v1", 3, 43, key=b"k-small")
    finally:
        await letters.close()
    cut, small = await _letters(settings.kafka_bootstrap, dead, 2)
    assert cut.key == b"k-cut" and cut.value == value[:CUT]
    assert dict(cut.headers) == {
        "reason": b"ChatTurn without event_id", "source-topic": b"parley.chat.turns.v1", "source-partition": b"3",
        "source-offset": b"42", "original-size": str(len(value)).encode(),
        "original-sha256": hashlib.sha256(value).hexdigest().encode(), "truncated": b"true"}
    assert small.value == b"small" and dict(small.headers)["original-size"] == b"5"
    assert "truncated" not in dict(small.headers)


async def test_a_dead_letter_kafka_refuses_for_good_is_given_up_and_counted_not_retried(stack, settings):
    """The dead-letter topic takes at most 16 KiB a message: even cut, the letter is refused
    (MessageSizeTooLargeError) on every try. It is given up (logged, counted lost) and the next goes."""
    dead = await small_topic(settings, f"{settings.topic('deadletter')}.small-{uuid.uuid4().hex[:6]}", 16384)
    labels = {"topic": dead, "outcome": "lost"}
    before = REGISTRY.get_sample_value("parley_events_published_total", labels) or 0.0
    letters = DeadLetters(settings.kafka_bootstrap, dead, client_id="test-dead-letters")
    try:
        assert await asyncio.wait_for(letters.send(b"x" * 100_000, "big", "t", 0, 7), timeout=30) is False
        assert await asyncio.wait_for(letters.send(b"fits", "small", "t", 0, 8), timeout=30) is True
    finally:
        await letters.close()
    assert REGISTRY.get_sample_value("parley_events_published_total", labels) == before + 1
    [letter] = await _letters(settings.kafka_bootstrap, dead, 1, timeout=10)
    assert letter.value == b"fits"


async def test_the_worker_dead_letters_an_undecodable_turn_near_one_mib_and_goes_on(stack, settings, pg, sink_pool):
    """A ChatTurn without event_id of ~1 MiB is dead-lettered (cut, with its size) and the valid turns
    behind it in its partition are stored: the partition does not stop at it."""
    key_id = f"huge-{uuid.uuid4().hex[:8]}"
    suffix = uuid.uuid4().hex[:6]
    topic, dead = f"{settings.topic('chat_turns')}.huge-{suffix}", f"{settings.topic('deadletter')}.huge-{suffix}"
    await ensure_topics(settings.kafka_bootstrap, [topic, dead], 1)
    value = _huge_turn(key_id)
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                         max_request_size=2 << 20)
    await p.start()
    try:
        await p.send_and_wait(topic, value, key=key_id.encode())
        for i in range(3):
            await p.send_and_wait(topic, now_turn(key_id, 1.0 + i).SerializeToString(), key=key_id.encode())
    finally:
        await p.stop()

    group = f"dead-letter-test-{suffix}"
    sink = MetricsSink(settings.postgres_dsn, group)
    sink.pool = sink_pool
    letters = StreamDeadLetters(settings.kafka_bootstrap, dead)   # the worker's dead-letter sender
    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap, group_id=group,
        routes={topic: Route(decode_turn, BatchApplier(sink.write_turns, letters.send))},
        progress=Progress(stall_seconds=60), stored_offsets=sink.stored_offsets,
        lower_offset=sink.lower_offset, send_dead_letter=letters.send,
        on_minutes=lambda _minutes: None, batch_size=50, fetch_max_bytes=4 << 20, partition_fetch_bytes=2 << 20,
        session_timeout_seconds=10,
    )
    await consumer.start()
    try:
        [letter] = await _letters(settings.kafka_bootstrap, dead, 1, timeout=60)
        headers = dict(letter.headers)
        assert headers["reason"] == b"ChatTurn without event_id" and headers["source-offset"] == b"0"
        assert headers["original-size"] == str(len(value)).encode() and headers["truncated"] == b"true"
        assert letter.value == value[:CUT] and letter.key == key_id.encode()

        async def stored() -> bool:
            return await count_turns(pg, key_id) == (3, 3)
        assert await wait_for(stored, timeout=60), await count_turns(pg, key_id)
    finally:
        await consumer.stop()
        await letters.on_shutdown()
