"""The knowledge follower does not die silently: it restarts with backoff and says whether it follows."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.common.kafka import EventProducer, ensure_topics
from services.common.knowledge_events import KnowledgeFollower
from services.common.pb.parley.v1 import events_pb2
from tests.conftest import RUN_ID


async def _until(condition, timeout: float = 30.0, message=lambda: "") -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met in time {message()}")


@contextlib.asynccontextmanager
async def _following(stack, on_event, **follower_settings) -> AsyncIterator[tuple[KnowledgeFollower, EventProducer, str]]:
    """A started follower of a topic of its own, and a producer to that topic; both stopped after."""
    topic = f"parley.test.knowledge.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    follower = KnowledgeFollower(stack.kafka_bootstrap, topic, on_event, **follower_settings)
    producer = EventProducer(stack.kafka_bootstrap)
    await producer.start()
    try:
        await follower.start()
        yield follower, producer, topic
    finally:
        await follower.stop()
        await producer.stop()


async def test_a_follower_whose_consumer_stopped_restarts_and_keeps_following(stack):
    seen: list[str] = []

    async def on_event(event: events_pb2.KnowledgeUpdated) -> None:
        seen.append(event.product_key_id)

    async with _following(stack, on_event, service="test", max_backoff_seconds=0.5) as (follower, producer, topic):
        await _until(lambda: follower.healthy)
        await follower._consumer.stop()  # the consumer goes away under the follower (as on a fatal error)
        await _until(lambda: follower.restarts >= 1 and follower.healthy)
        await asyncio.sleep(1.0)  # "latest": the new consumer has its position before the event is sent
        await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="after-restart"), wait=True)
        await _until(lambda: "after-restart" in seen)


async def test_events_sent_while_a_follower_restarts_are_not_missed(stack):
    """The consumer goes away after one event; the next is sent before the new consumer exists. From
    the end of the topic ("latest") the new consumer missed it; it goes on after the last it handled."""
    seen: list[str] = []

    async def on_event(event: events_pb2.KnowledgeUpdated) -> None:
        seen.append(event.product_key_id)

    async with _following(stack, on_event, service="test-resume", max_backoff_seconds=2.0) as (
            follower, producer, topic):
        await _until(lambda: follower.healthy)
        await asyncio.sleep(1.0)  # "latest": the consumer has its position before the first event is sent
        await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="before"), wait=True)
        await _until(lambda: seen == ["before"])
        await follower._consumer.stop()  # the consumer goes away under the follower
        await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="meanwhile"), wait=True)
        await _until(lambda: follower.restarts >= 1 and follower.healthy)
        await _until(lambda: seen == ["before", "meanwhile"])


async def test_a_follower_without_a_broker_reports_it_and_keeps_trying():
    async def on_event(event) -> None:
        return None

    follower = KnowledgeFollower("127.0.0.1:9", "parley.test.nowhere", on_event, service="test-away",
                                 max_backoff_seconds=0.2)
    await follower.start()
    try:
        await _until(lambda: follower.restarts >= 2)
        assert not follower.healthy
        with pytest.raises(RuntimeError, match="not consuming"):
            await follower.ping()
    finally:
        await follower.stop()


async def test_a_follower_says_whether_it_has_heard_from_the_broker_lately(stack):
    """Idle, it stays healthy (every fetch answered, even empty, counts); stuck in an event past
    `stale_seconds` it is not following (its partition is not fetched meanwhile), and says so until
    it goes on. A frozen broker looks the same to it: nothing heard, and nothing raised."""
    release = asyncio.Event()
    seen: list[str] = []

    async def on_event(event: events_pb2.KnowledgeUpdated) -> None:
        seen.append(event.product_key_id)
        await release.wait()

    async with _following(stack, on_event, service="test-stale", stale_seconds=1.0) as (follower, producer, topic):
        try:
            await _until(lambda: follower.healthy)
            for _ in range(30):                     # 3 s idle, three times `stale_seconds`
                assert follower.healthy, follower.quiet_seconds()
                await asyncio.sleep(0.1)
            await follower.ping()
            await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="stuck"), wait=True)
            await _until(lambda: seen == ["stuck"], timeout=10)
            await _until(lambda: not follower.healthy, timeout=3)
            with pytest.raises(RuntimeError, match="not heard from the broker"):
                await follower.ping()
            release.set()
            await _until(lambda: follower.healthy, timeout=3)
            await follower.ping()
            assert follower.restarts == 0
        finally:
            release.set()                           # the follower stops only once its event is handled


async def test_a_follower_whose_topic_was_deleted_and_made_again_follows_the_new_topic(stack):
    """aiokafka's consumer of a deleted topic waits for ever without raising: past its quiet bound the
    follower starts a new consumer, which follows the topic made again."""
    seen: list[str] = []

    async def on_event(event: events_pb2.KnowledgeUpdated) -> None:
        seen.append(event.product_key_id)

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        async with _following(stack, on_event, service="test", max_backoff_seconds=0.5, stale_seconds=1.0,
                              restart_after_seconds=3.0) as (follower, producer, topic):
            await _until(lambda: follower.healthy)
            for n in range(3):      # the old topic's place is past the new topic's end
                await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id=f"old-{n}"), wait=True)
            await _until(lambda: len(seen) == 3)
            await admin.delete_topics([topic])
            for _ in range(100):     # the broker forgets the topic, then it is made again
                await asyncio.sleep(0.2)
                try:
                    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
                    break
                except Exception:  # noqa: BLE001 - still being deleted
                    continue
            # Sent to the topic made again before the follower noticed: its new consumer reads it, the
            # last one's place being past the new topic's end.
            await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="before"), wait=True)
            await _until(lambda: follower.restarts >= 1 and follower.healthy, timeout=60)
            await producer.publish(topic, "k", events_pb2.KnowledgeUpdated(product_key_id="new-topic"), wait=True)
            await _until(lambda: "before" in seen and "new-topic" in seen, message=lambda: seen)
            await admin.delete_topics([topic])
    finally:
        await admin.close()
