"""Follows parley.knowledge.updated.v1 and drops the answer-cache pointers of keys whose knowledge changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer

from services.common.pb.parley.v1 import events_pb2
from services.response.cache import ResponseStore

logger = logging.getLogger(__name__)


class KnowledgeFollower:
    """Every replica reads every event (no consumer group) from the end of the topic: the pointers
    it drops are shared in Redis, and an event missed while down is covered by the pointer TTL."""

    def __init__(self, bootstrap: str, topic: str, store: ResponseStore) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._store = store
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
            except Exception:  # noqa: BLE001 - not ours to dead-letter; the pointer TTL covers it
                logger.warning("undecodable knowledge event at offset %s", message.offset)
                continue
            try:
                dropped = await self._store.forget_key(event.product_key_id)
                logger.info("knowledge of %s is now version %s (%s); dropped %d pointer(s)",
                            event.product_key_id, event.knowledge_version, event.reason, dropped)
            except Exception:  # noqa: BLE001
                logger.exception("could not drop the pointers of %s", event.product_key_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
