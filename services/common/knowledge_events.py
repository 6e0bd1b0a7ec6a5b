"""Follows parley.knowledge.updated.v1 and hands each event to a callback (cache invalidation).

No consumer group: every replica reads every event from the end of the topic. What the callbacks
drop lives in Redis, shared by the replicas, and an event missed while every replica was down is
covered by the TTL of what it would have dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from services.common.pb.parley.v1 import events_pb2

logger = logging.getLogger(__name__)

OnKnowledgeUpdated = Callable[[events_pb2.KnowledgeUpdated], Awaitable[None]]


class KnowledgeFollower:
    def __init__(self, bootstrap: str, topic: str, on_event: OnKnowledgeUpdated) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._on_event = on_event
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        consumer = AIOKafkaConsumer(self._topic, bootstrap_servers=self._bootstrap, group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.get_running_loop().create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        async for message in consumer:
            try:
                event = events_pb2.KnowledgeUpdated.FromString(message.value)
            except Exception:  # noqa: BLE001 - not ours to dead-letter; the TTL covers it
                logger.warning("undecodable knowledge event at offset %s", message.offset)
                continue
            try:
                await self._on_event(event)
            except Exception:  # noqa: BLE001 - one failed invalidation must not stop the follower
                logger.exception("handling the knowledge update of %s failed", event.product_key_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
