"""Follows parley.knowledge.updated.v1 and hands each event to a callback (cache invalidation).

No consumer group: every replica reads every event from the end of the topic. What the callbacks
drop lives in Redis, shared by the replicas, and an event missed while every replica was down is
covered by the TTL of what it would have dropped.

The follower restarts itself with backoff when its consumer fails (broker gone, consumer
stopped): `healthy` and the metric parley_knowledge_follower_up say whether it is consuming, so a
follower that cannot follow is visible instead of silently gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from services.common.kafka import STOP_SECONDS, within
from services.common.metrics import KNOWLEDGE_FOLLOWER_RESTARTS, KNOWLEDGE_FOLLOWER_UP
from services.common.pb.parley.v1 import events_pb2

logger = logging.getLogger(__name__)

OnKnowledgeUpdated = Callable[[events_pb2.KnowledgeUpdated], Awaitable[None]]


class KnowledgeFollower:
    def __init__(self, bootstrap: str, topic: str, on_event: OnKnowledgeUpdated, *, service: str = "",
                 max_backoff_seconds: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._on_event = on_event
        self._service = service or "unknown"
        self._max_backoff = max_backoff_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self.healthy = False
        self.restarts = 0
        self.last_error = ""

    async def start(self) -> None:
        """Starts following in the background; does not wait for the broker."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def ping(self) -> None:
        """Health detail: fails while the follower is not consuming."""
        if not self.healthy:
            raise RuntimeError(f"knowledge follower not consuming ({self.last_error or 'starting'})")

    def _set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy
        KNOWLEDGE_FOLLOWER_UP.labels(self._service).set(1 if healthy else 0)

    async def _supervise(self) -> None:
        retrying = AsyncRetrying(wait=wait_exponential_jitter(multiplier=0.2, max=self._max_backoff, jitter=0.2),
                                 retry=retry_if_exception_type(Exception), before_sleep=self._failed)
        async for attempt in retrying:
            with attempt:
                await self._follow_once()
                raise RuntimeError("the knowledge consumer stopped")

    def _failed(self, retry_state) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        self._set_healthy(False)
        self.restarts += 1
        self.last_error = repr(exc)
        KNOWLEDGE_FOLLOWER_RESTARTS.labels(self._service).inc()
        logger.warning("knowledge follower failed (%r); restarting (attempt %d)", exc, retry_state.attempt_number)

    async def _follow_once(self) -> None:
        consumer = AIOKafkaConsumer(self._topic, bootstrap_servers=self._bootstrap, group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False)
        self._consumer = consumer
        try:
            await consumer.start()
            self._set_healthy(True)
            self.last_error = ""
            await self._run(consumer)
        finally:
            self._set_healthy(False)
            self._consumer = None
            await within(STOP_SECONDS, "stopping the knowledge follower's consumer", consumer.stop())

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
