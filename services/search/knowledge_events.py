"""Follows parley.knowledge.updated.v1 and drops the cached record of keys whose knowledge changed.

Admin RPCs of this service invalidate directly; this catches the scraper's changes (and repeats the
admin ones, which also closes most of the window where a concurrent Plan re-cached a stale record)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.common.pb.parley.v1 import events_pb2
from services.search.key_cache import KeyCache
from services.search.keys import key_hash_of

logger = logging.getLogger(__name__)


class KnowledgeFollower:
    """No consumer group: every replica reads every event from the end of the topic. The cache is
    shared in Redis, and an event missed while every replica was down is covered by the cache TTL."""

    def __init__(self, bootstrap: str, topic: str, cache: KeyCache, pool: asyncpg.Pool) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._cache = cache
        self._pool = pool
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
            except Exception:  # noqa: BLE001 - not ours to dead-letter; the cache TTL covers it
                logger.warning("undecodable knowledge event at offset %s", message.offset)
                continue
            try:
                key_hash = await key_hash_of(self._pool, event.product_key_id)
                if key_hash is not None:
                    await self._cache.invalidate(key_hash)
            except Exception:  # noqa: BLE001
                logger.exception("could not invalidate the cached key %s", event.product_key_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
