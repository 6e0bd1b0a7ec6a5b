"""Follows parley.knowledge.updated.v1 and hands each event to a callback (cache invalidation).

No consumer group: every replica reads every event from the end of the topic. What the callbacks
drop lives in Redis, shared by the replicas, and an event missed while every replica was down is
covered by the TTL of what it would have dropped. A follower that restarts its consumer goes on from
the events after the last it handled, not from the end: those sent while it restarted are not missed.

The follower restarts itself with backoff when its consumer fails (broker gone, consumer
stopped): `healthy` and the metric parley_knowledge_follower_up say whether it is consuming, so a
follower that cannot follow is visible instead of silently gone. A consumer whose broker does not
answer (frozen, a lost network path) does not fail: aiokafka retries inside it without raising. So
consuming means also having heard from the broker lately (`stale_seconds`), and a consumer that has
heard nothing for `restart_after_seconds` (its topic deleted and made again: aiokafka then waits for
ever) is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from services.common.kafka import STOP_SECONDS, within
from services.common.metrics import KNOWLEDGE_FOLLOWER_RESTARTS, KNOWLEDGE_FOLLOWER_UP
from services.common.pb.parley.v1 import events_pb2

logger = logging.getLogger(__name__)

# A fetch is a long poll the broker answers within 0.5 s (aiokafka's fetch_max_wait_ms), with records
# or without: a follower that has heard nothing for this long is not following (a broker frozen for
# 30 s left it SERVING throughout while only a raised error counted). Far above a busy event loop's
# stall; with the health watcher's 5 s interval, a freeze shows within ~15 s (8.6 s measured locally).
STALE_SECONDS = 8.0
# A consumer that has heard nothing for this long is replaced: aiokafka's consumer of a topic that was
# deleted (and made again) waits for ever, with nothing raised, and only a new one follows the new topic.
RESTART_AFTER_SECONDS = 30.0

OnKnowledgeUpdated = Callable[[events_pb2.KnowledgeUpdated], Awaitable[None]]


class KnowledgeFollower:
    def __init__(self, bootstrap: str, topic: str, on_event: OnKnowledgeUpdated, *, service: str = "",
                 max_backoff_seconds: float = 10.0, stale_seconds: float = STALE_SECONDS,
                 restart_after_seconds: float = RESTART_AFTER_SECONDS) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._on_event = on_event
        self._service = service or "unknown"
        self._max_backoff = max_backoff_seconds
        self._stale = stale_seconds
        self._restart_after = restart_after_seconds
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._consuming = False
        # Wall clock, as aiokafka's poll timestamps: when the consumer started, when an event was handled.
        self._started_at = 0.0
        self._handled_at = 0.0
        self._handling_since: float | None = None   # an event's handling under way since then
        self._next: dict[TopicPartition, int] = {}   # per partition, the offset after the last handled
        self.restarts = 0
        self.last_error = ""
        KNOWLEDGE_FOLLOWER_UP.labels(self._service).set_function(lambda: 1.0 if self.healthy else 0.0)

    async def start(self) -> None:
        """Starts following in the background; does not wait for the broker."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    @property
    def healthy(self) -> bool:
        return self._consuming and self.quiet_seconds() < self._stale

    async def ping(self) -> None:
        """Health detail: fails while the follower is not consuming, or has not heard from the broker
        for `stale_seconds`."""
        if not self._consuming:
            raise RuntimeError(f"knowledge follower not consuming ({self.last_error or 'starting'})")
        quiet = self.quiet_seconds()
        if quiet >= self._stale:
            raise RuntimeError(f"knowledge follower has not heard from the broker for {quiet:.1f} s")

    def quiet_seconds(self) -> float:
        """Seconds since the follower last heard from every partition it follows (a fetch answered,
        even an empty one) or handled an event, not counting what it heard while one event's handling
        went on: working through a burst is following, one event stuck is not."""
        heard = max(self._started_at, self._handled_at)
        consumer = self._consumer
        if consumer is not None:
            partitions = consumer.assignment()
            if partitions:
                polls = [consumer.last_poll_timestamp(tp) for tp in partitions]
                heard = max(heard, min(self._started_at if ms is None else ms / 1000 for ms in polls))
        if self._handling_since is not None:
            # Fetches answered while an event is being handled (aiokafka fetches ahead) are not following.
            heard = min(heard, self._handling_since)
        return time.time() - heard

    def _set_consuming(self, consuming: bool) -> None:
        self._consuming = consuming
        if consuming:
            self._started_at = time.time()

    async def _supervise(self) -> None:
        retrying = AsyncRetrying(wait=wait_exponential_jitter(multiplier=0.2, max=self._max_backoff, jitter=0.2),
                                 retry=retry_if_exception_type(Exception), before_sleep=self._failed)
        async for attempt in retrying:
            with attempt:
                await self._follow_once()
                raise RuntimeError("the knowledge consumer stopped")

    def _failed(self, retry_state) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        self._set_consuming(False)
        self.restarts += 1
        self.last_error = repr(exc)
        KNOWLEDGE_FOLLOWER_RESTARTS.labels(self._service).inc()
        logger.warning("knowledge follower failed (%r); restarting (attempt %d)", exc, retry_state.attempt_number)

    async def _follow_once(self) -> None:
        # The first consumer starts at the topic's end. One after it goes on from the last one's place,
        # and a partition it has no place for, or a place past the end (the topic deleted and made again,
        # partitions added), from the beginning: the events sent since are not missed.
        consumer = AIOKafkaConsumer(self._topic, bootstrap_servers=self._bootstrap, group_id=None,
                                    auto_offset_reset="earliest" if self._next else "latest",
                                    enable_auto_commit=False)
        self._consumer = consumer
        try:
            await consumer.start()
            for tp in consumer.assignment():
                if tp in self._next:
                    consumer.seek(tp, self._next[tp])   # a restart: on from where the last consumer was
                else:
                    # From here on: a restart goes on from this partition's place, events or none.
                    self._next[tp] = await asyncio.wait_for(consumer.position(tp), self._restart_after)
            self._set_consuming(True)
            self.last_error = ""
            await self._run(consumer)
        finally:
            self._set_consuming(False)
            self._consumer = None
            await within(STOP_SECONDS, "stopping the knowledge follower's consumer", consumer.stop())

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                for message in messages:
                    self._handling_since = time.time()
                    try:
                        await self._handle(message.value, message.offset)
                    finally:
                        self._handled_at, self._handling_since = time.time(), None
                        self._next[TopicPartition(message.topic, message.partition)] = message.offset + 1
            quiet = self.quiet_seconds()
            if quiet >= self._restart_after:
                # Its topic deleted and made again, or a broker that stopped answering: a new consumer.
                raise RuntimeError(f"no word from the broker for {quiet:.0f} s")

    async def _handle(self, value: bytes, offset: int) -> None:
        try:
            event = events_pb2.KnowledgeUpdated.FromString(value)
        except Exception:  # noqa: BLE001 - not ours to dead-letter; the TTL covers it
            logger.warning("undecodable knowledge event at offset %s", offset)
            return
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
