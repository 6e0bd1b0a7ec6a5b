"""`committed_past` against the real Kafka: a crawl job is reported done once the search indexer's
group has committed past the pages it handed over, and not before."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.common.kafka import committed_past, ensure_topics
from tests.conftest import RUN_ID


async def test_true_once_the_group_committed_past_every_offset_false_before_and_without_a_broker(stack):
    topic = f"parley.test.committed.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    group = f"test-committed-{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        records = [await producer.send_and_wait(topic, b"page", partition=p) for p in (0, 0, 1)]
    finally:
        await producer.stop()
    handed = {TopicPartition(topic, 0): records[1].offset, TopicPartition(topic, 1): records[2].offset}
    assert not await committed_past(stack.kafka_bootstrap, group, handed, timeout=1.0, interval=0.2)  # no commits

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer.assign([tp0, tp1])
        # Partition 0 processed up to its first page only, partition 1 done: not yet.
        await consumer.commit({tp0: OffsetAndMetadata(records[0].offset + 1, ""),
                               tp1: OffsetAndMetadata(records[2].offset + 1, "")})
        assert not await committed_past(stack.kafka_bootstrap, group, handed, timeout=1.0, interval=0.2)
        await consumer.commit({tp0: OffsetAndMetadata(records[1].offset + 1, "")})
        assert await committed_past(stack.kafka_bootstrap, group, handed, timeout=10.0, interval=0.2)
    finally:
        await consumer.stop()
    assert not await committed_past("127.0.0.1:9", group, handed, timeout=1.0, interval=0.2)  # nothing listens


async def test_a_group_that_commits_nothing_for_the_stall_is_given_up_on_long_before_the_timeout(stack):
    """The search service down: a crawl job is not held up for the whole wait."""
    topic = f"parley.test.committed.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        record = await producer.send_and_wait(topic, b"page", partition=0)
    finally:
        await producer.stop()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert not await committed_past(stack.kafka_bootstrap, f"test-idle-{uuid.uuid4().hex[:6]}",
                                    {TopicPartition(topic, 0): record.offset}, timeout=120.0, stall=1.0, interval=0.2)
    assert loop.time() - start < 60   # the stall, not the 120 s timeout, ended the wait
