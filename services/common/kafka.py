"""Kafka helpers: topic creation, an idempotent event producer, event envelopes (headers), and the
dead-letter sender of the consumers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CorruptRecordException,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    PolicyViolationError,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    UnknownProducerId,
    UnsupportedForMessageFormatError,
)
from aiokafka.structs import RecordMetadata, TopicPartition
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from services.common.metrics import EVENTS_PUBLISHED
from services.common.runner import when_ready

logger = logging.getLogger(__name__)

SCHEMA_VERSION = b"1"


# Event ids are version-7 UUIDs (RFC 9562): the first 48 bits are the Unix time in milliseconds, the
# other 74 random, drawn from a generator seeded from os.urandom (reseeded in a forked child): unique
# like uuid4's, without its system call per id (a sixth of the CPU of building a chat turn's event in
# a profile of the cached chat path). Time first matters to the stream worker: conversations' primary
# key is the event id, and ids that grow with time are inserted at the right edge of that btree (a
# few hot pages, PostgreSQL's rightmost-leaf fast path, full pages on split) instead of at a random
# leaf of a tree larger than the buffers. Measured side by side (`bench.stream_sink`'s write, 120k
# rows per round, three alternated rounds each): PostgreSQL's CPU per 1k rows 29-34 ms with random
# ids, 20-22 ms with these; the sink's rate 38-42k against 49-59k rows/s.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_VERSION_7 = (7 << 76) | (0b10 << 62)
_RAND_B = (1 << 62) - 1


_EVENT_ID = re.compile(r"[0-9a-f]{32}")


def new_event_id() -> str:
    """A version-7 UUID as 32 hex digits: ids made later sort after ids made earlier (to the
    millisecond, and across processes as far as their clocks agree)."""
    rand = _ids.getrandbits(74)
    return f"{(time.time_ns() // 1_000_000) << 80 | _VERSION_7 | (rand >> 62) << 64 | rand & _RAND_B:032x}"


def event_id_age(event_id: str) -> float | None:
    """Seconds since `event_id` was made by new_event_id (negative: a clock ahead of this one), or
    None when it is not such an id: exactly its 32 lower-case hex digits (int() would also read
    upper case, "_" and other scripts' digits, which no id made here holds)."""
    if not _EVENT_ID.fullmatch(event_id):
        return None
    value = int(event_id, 16)
    if (value >> 76) & 0xF != 7 or (value >> 62) & 0b11 != 0b10:
        return None
    return time.time() - (value >> 80) / 1000


def now_timestamp() -> Timestamp:
    """Now, as a protobuf Timestamp (without Timestamp.GetCurrentTime's datetime round trip)."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def event_headers(message: Message, trace_id: str = "") -> list[tuple[str, bytes]]:
    """Headers of every Parley event: its type, schema version and trace id."""
    return [
        ("event-type", message.DESCRIPTOR.full_name.encode()),
        ("schema-version", SCHEMA_VERSION),
        ("trace-id", (trace_id or new_event_id()).encode()),
    ]


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, replication: int = 1, retention_ms: int | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the topics that do not exist yet, each with its `configs` entry (topic name -> Kafka topic
    configuration); an existing topic whose configuration differs from its entry is brought to it (the
    other settings an operator gave it are kept). Partitions and replicas of existing topics are left."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        common = {"retention.ms": str(retention_ms)} if retention_ms else {}
        wanted = {t: {**common, **(configs or {}).get(t, {})} for t in topics}
        missing = [NewTopic(name=t, num_partitions=partitions, replication_factor=replication, topic_configs=wanted[t])
                   for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            logger.info("created topics %s", [t.name for t in missing])
        # Also the topics just made: one that another process made first has its configuration, not ours.
        await _reconcile_configs(admin, {t: c for t, c in wanted.items() if c})
    finally:
        await admin.close()


_TOPIC_OVERRIDE = 1   # DescribeConfigs' config source of a setting given to the topic itself


async def _reconcile_configs(admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    """Existing topics given the configuration they should have (a topic created before its entry
    changed, or by a broker's auto-creation). AlterConfigs replaces a topic's whole set of overrides, so
    each is sent with the topic's other overrides as they are."""
    if not wanted:
        return
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted])
    changes = []
    for response in responses:
        for code, _message, _type, name, entries in response.resources:
            if code or name not in wanted:
                continue
            current = {e[0]: e[1] for e in entries}
            if all(current.get(k) == v for k, v in wanted[name].items()):
                continue
            # entry: name, value, read-only, source (version 0: is-default), sensitive, ...
            overrides = {e[0]: e[1] for e in entries if not e[4] and (
                e[3] == _TOPIC_OVERRIDE if response.API_VERSION > 0 else not e[3])}
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, {**overrides, **wanted[name]}))
            logger.info("topic %s: configuration %s set (was %s)", name, dict(wanted[name]),
                        {k: current.get(k) for k in wanted[name]})
    if changes:
        for response in await admin.alter_configs(changes):
            failed = [(r[3], r[0], r[1]) for r in response.resources if r[0]]
            if failed:
                logger.warning("topic configuration not changed: %s", failed)


# How long a stop gives a Kafka client's last commit or flush. With no broker, aiokafka's commit waits
# for a group coordinator and an idempotent producer's stop for its buffer to be acknowledged, both for
# good: a process told to stop would hang until the broker is back.
STOP_SECONDS = 5.0


async def within(seconds: float, what: str, call: Awaitable) -> None:
    """Awaits a Kafka client's commit or stop on the way out for at most `seconds`; past that, or if it
    fails, logs it and goes on. Nothing depends on it: offsets are stored with the data or replayed,
    and unacknowledged events were counted and logged by whoever sent them."""
    try:
        await asyncio.wait_for(call, timeout=seconds)
    except TimeoutError:
        logger.warning("%s: Kafka did not answer within %.0f s; given up", what, seconds)
    except asyncio.CancelledError:
        # aiokafka's stop awaits the fetch tasks it cancelled, and a fetch waiting out a broker that
        # is gone can let that cancellation out; unless this task is the one being cancelled, go on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        logger.warning("%s: cancelled inside the Kafka client; given up", what)
    except Exception as exc:  # noqa: BLE001 - on the way out: logged, never raised
        logger.warning("%s failed: %s", what, exc)


# Errors after which an idempotent producer's sequence numbers no longer match the broker's (a batch
# failed before it reached the broker, e.g. its partition had no leader past the request timeout):
# every later batch to the partition fails the same way until the producer is replaced.
BROKEN_PRODUCER_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber, InvalidProducerEpoch, UnknownProducerId, InvalidProducerIdMapping, ProducerFenced,
)


class EventProducer:
    """An idempotent producer (`acks=all`) that writes protobuf events keyed by product key id."""

    def __init__(self, bootstrap: str, *, linger_ms: int = 5, client_id: str = "parley") -> None:
        self._config = dict(bootstrap_servers=bootstrap, linger_ms=linger_ms, client_id=client_id)
        self._producer = self._new_producer()
        self._started = False
        self._starting = asyncio.Lock()   # the outbox's round and the readiness probe may start it at once
        self._pending: set[asyncio.Future] = set()
        self.background_retry_seconds = 60.0
        self._acknowledged_at = float("-inf")  # monotonic time of the last batch the broker acknowledged

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self._config,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=15000,
            # Bounded local buffering while the broker is away: a full buffer fails the send
            # with a clear error instead of growing without limit.
            max_batch_size=256 * 1024,
        )

    async def start(self) -> None:
        if self._started:
            return
        async with self._starting:
            if self._started:
                return
            try:
                await self._producer.start()
            except BaseException:
                # A producer whose start failed (or was cancelled: a stop) cannot be started again:
                # closed, and replaced for the retry.
                await within(STOP_SECONDS, "closing a producer that did not start", self._producer.stop())
                self._producer = self._new_producer()
                raise
            self._started = True

    async def stop(self) -> None:
        """Flush what is buffered, then close."""
        if self._started:
            if self._pending:
                _, left = await asyncio.wait(set(self._pending), timeout=10.0)
                for task in left:
                    task.cancel()
                if left:
                    EVENTS_PUBLISHED.labels("", "lost").inc(len(left))
                    logger.error("stopping with %d event(s) not acknowledged by Kafka; given up", len(left))
            await within(STOP_SECONDS, "stopping the producer", self._producer.stop())
            self._started = False

    async def publish(self, topic: str, key: str, message: Message, *, trace_id: str = "", wait: bool = False
                      ) -> RecordMetadata | None:
        """Hand one event to Kafka. With wait=True, returns the record's partition and offset once the
        broker acknowledged it. With wait=False the call returns once the event is buffered; an
        event the broker does not acknowledge is sent again in the background (with backoff, for up
        to `background_retry_seconds`) before it is given up, counted and logged at error. The chat
        path does not use this: its events go through the durable outbox (services/common/outbox.py)."""
        value, key_bytes, headers = message.SerializeToString(), key.encode(), event_headers(message, trace_id)
        producer = self._producer
        fut = await producer.send(topic, value=value, key=key_bytes, headers=headers)
        if wait:
            return await self._settle(topic, fut, producer)
        task = asyncio.ensure_future(self._settle_in_background(topic, fut, producer, value, key_bytes, headers))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return None

    async def _settle(self, topic: str, fut: asyncio.Future, producer: AIOKafkaProducer) -> RecordMetadata:
        try:
            metadata = await fut
            EVENTS_PUBLISHED.labels(topic, "ok").inc()
            return metadata
        except Exception as exc:
            EVENTS_PUBLISHED.labels(topic, "failed").inc()
            logger.exception("event to %s was not acknowledged by Kafka", topic)
            await self._replace_if_broken(exc, producer)
            raise

    async def _replace_if_broken(self, exc: BaseException, producer: AIOKafkaProducer) -> None:
        """The producer that got one of BROKEN_PRODUCER_ERRORS is replaced (started again at once), so
        the next events do not fail as this one did; once, however many of its events fail so."""
        if isinstance(exc, BROKEN_PRODUCER_ERRORS) and producer is self._producer and self._started:
            logger.warning("the Kafka producer is out of step with the broker (%r); replaced", exc)
            await self.reset()
            await self.start()

    async def _settle_in_background(self, topic: str, fut: asyncio.Future, producer: AIOKafkaProducer,
                                     value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        retrying = AsyncRetrying(stop=stop_after_delay(self.background_retry_seconds),
                                 wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
                                 retry=retry_if_exception_type(Exception), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        EVENTS_PUBLISHED.labels(topic, "retried").inc()
                        producer = self._producer
                        fut = await producer.send(topic, value=value, key=key, headers=headers)
                    try:
                        await fut
                    except BROKEN_PRODUCER_ERRORS as exc:
                        await self._replace_if_broken(exc, producer)
                        raise
        except Exception:  # noqa: BLE001 - nobody awaits this task: count and log, never raise into the void
            EVENTS_PUBLISHED.labels(topic, "lost").inc()
            logger.exception("event to %s was not acknowledged by Kafka after %.0fs of retries; given up",
                             topic, self.background_retry_seconds)
            return
        EVENTS_PUBLISHED.labels(topic, "ok").inc()

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future:
        """Buffer one serialised event; the future resolves when the broker acknowledged it."""
        return await self._producer.send(topic, value=value, key=key, headers=headers)

    async def send_rows(self, rows: Sequence[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]
                        ) -> list[object]:
        """Send serialised events (topic, key, value, headers), in order, as one record batch per
        partition (several when one fills up) instead of one `send` each: under load the per-event
        send was about half of the Python work of delivering a chat turn's event. Each event goes to the
        partition `send` would pick for its key. Returns, per event, None once the broker
        acknowledged its batch or the exception that failed it."""
        producer = self._producer
        builders: dict[tuple[str, int], object] = {}
        futures: list[asyncio.Future] = []
        batch_of: list[int] = []   # per row: index of the future of its batch
        open_batch: dict[tuple[str, int], int] = {}
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        tps: dict[tuple[str, bytes], tuple[str, int]] = {}  # a round holds few keys: hash each once
        for topic, key, value, headers in rows:
            tp = tps.get((topic, key))
            if tp is None:
                known = partitions.get(topic)
                if known is None:
                    await producer.partitions_for(topic)   # waits for the topic's metadata, like send
                    metadata = producer.client.cluster
                    known = partitions[topic] = (list(metadata.partitions_for_topic(topic)),
                                                 list(metadata.available_partitions_for_topic(topic)))
                # The producer's own partitioner, with the lists `send` gives it: same key, same partition.
                tp = tps[(topic, key)] = (topic, producer._partitioner(key, known[0], known[1]))
            builder = builders.get(tp)
            if builder is None or builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                if builder is not None:   # full: send it, go on in a new one
                    futures[open_batch[tp]] = await self._send_batch(builder, tp)
                builder = builders[tp] = producer.create_batch()
                if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    raise ValueError(f"an event of {len(value)} bytes does not fit in a record batch")
                open_batch[tp] = len(futures)
                futures.append(None)  # type: ignore[arg-type]
            batch_of.append(open_batch[tp])
        for tp, index in open_batch.items():
            if futures[index] is None:
                futures[index] = await self._send_batch(builders[tp], tp)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        failed = any(isinstance(outcome, BaseException) for outcome in outcomes)
        self._acknowledged_at = float("-inf") if failed else time.monotonic()
        return [outcomes[i] if isinstance(outcomes[i], BaseException) else None for i in batch_of]

    async def _send_batch(self, builder, tp: tuple[str, int]) -> asyncio.Future:
        builder.close()
        return await self._producer.send_batch(builder, tp[0], partition=tp[1])

    async def reset(self, timeout: float = 5.0) -> None:
        """Drop the current producer (e.g. after the broker went away) for a fresh one on the next start."""
        old, self._producer = self._producer, self._new_producer()
        was_started, self._started = self._started, False
        self._acknowledged_at = float("-inf")
        if was_started:
            try:
                await asyncio.wait_for(old.stop(), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - the old producer is abandoned either way
                logger.info("stopping the previous Kafka producer: %r", exc)
                await _abandon(old)

    async def ping(self, fresh_seconds: float = 5.0) -> None:
        """Readiness probe: the cluster's metadata answers, unless the broker acknowledged the last
        batch less than `fresh_seconds` ago (a failed round or a reset asks the broker again). Under
        load the outbox's rounds prove it every 50 ms; reading every topic's metadata every 5 s was a
        tenth of the delivery's CPU in a profile of cached chats, on a broker holding 221 topics."""
        if time.monotonic() - self._acknowledged_at < fresh_seconds:
            return
        # Not started yet (no event sent since the process began, or since a reset): an unstarted
        # client knows no broker, and its metadata request failed with the broker up.
        await self.start()
        await self._producer.client.fetch_all_metadata()


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Close a producer whose stop did not end: an idempotent producer's batches wait for as long as the
    broker does not acknowledge them (NotEnoughReplicas), so its sender and connections would live on,
    one more per reset, each delivering its copy of the batches once the broker takes them."""
    with contextlib.suppress(Exception):
        if producer._sender is not None:   # noqa: SLF001 - aiokafka has no public way to give up
            await asyncio.wait_for(producer._sender.close(), 2.0)   # fails its batches
        await asyncio.wait_for(producer.client.close(), 2.0)


async def committed_past(bootstrap: str, group: str, offsets: dict[TopicPartition, int], *, timeout: float,
                         stall: float | None = None, interval: float = 0.5) -> bool:
    """True once consumer group `group` has committed past each offset of `offsets` (the records there
    and before them are processed: the group commits after its work); False at the timeout, or once
    the group's commits on those partitions have not moved for `stall` seconds (nobody consuming).
    Kafka away meanwhile is retried. Reads the group's commits; does not join it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer: AIOKafkaConsumer | None = None
    seen: tuple | None = None
    moved_at = loop.time()

    async def past() -> bool:
        nonlocal consumer, seen, moved_at
        if consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
            await consumer.start()
        committed = tuple([await consumer.committed(tp) or 0 for tp in offsets])
        if committed != seen:
            seen, moved_at = committed, loop.time()
        return all(at > offset for at, offset in zip(committed, offsets.values()))

    try:
        while True:
            try:
                if await asyncio.wait_for(past(), max(0.1, deadline - loop.time())):
                    return True
            except Exception as exc:  # noqa: BLE001 - Kafka away or the group moving: asked again
                logger.debug("committed offsets of %s not read: %r", group, exc)
                if consumer is not None:
                    await _stop_quietly(consumer)
                    consumer = None
            now = loop.time()
            if now + interval > deadline or (stall is not None and now - moved_at > stall):
                return False
            await asyncio.sleep(interval)
    finally:
        if consumer is not None:
            await _stop_quietly(consumer)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(Exception):   # a consumer that could not start has nothing to stop
        await consumer.stop()


class LazyProducer:
    """A Kafka producer started on first use (a publish or a readiness probe) rather than at a
    service's start, for services to which Kafka is a soft dependency (the scraper API, whose jobs live
    in PostgreSQL; the search service, which answers Plan from PostgreSQL). A start that failed
    is tried again by the next use. Starts are serialised by a lock, and each runs shielded, so that
    a caller that gives up (a deadline, the probe's timeout) never leaves a producer half started."""

    deferred_limit = 10_000          # events waiting for Kafka in `defer`; beyond, the oldest is dropped
    deferred_drain_seconds = 10.0    # what `stop` gives the deferred events still waiting
    start_wait_seconds = STOP_SECONDS  # what `stop` gives a start under way before cancelling it

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self._lock = asyncio.Lock()
        self._starting: asyncio.Future | None = None
        self._deferred: collections.deque[tuple[str, str, Message]] = collections.deque()
        self._sending: tuple[str, str, Message] | None = None    # taken from _deferred, being published
        self._drainer: asyncio.Task | None = None

    async def start(self) -> None:
        async with self._lock:
            starting = self._starting
            if starting is None or (starting.done() and (starting.cancelled() or starting.exception() is not None)):
                starting = self._starting = asyncio.ensure_future(self.producer.start())
                starting.add_done_callback(lambda f: f.cancelled() or f.exception())   # seen, if nobody waits
            await asyncio.shield(starting)

    async def publish(self, topic: str, key: str, message, *, wait: bool = False) -> RecordMetadata | None:
        await self.start()
        return await self.producer.publish(topic, key, message, wait=wait)

    def defer(self, topic: str, key: str, message: Message) -> None:
        """Publish `message` once Kafka takes it, in the order deferred, without waiting for it here: for
        an event announcing a change that is committed already, which must not fail because Kafka is
        away (or the producer could not start yet). One task publishes them, retrying the first with
        backoff (0.2 s doubling to 5 s) until it is handed over; at most `deferred_limit` wait (the
        oldest is dropped beyond, counted lost and logged), and `stop` gives those still waiting
        `deferred_drain_seconds`."""
        if len(self._deferred) >= self.deferred_limit:
            dropped, _, _ = self._deferred.popleft()
            EVENTS_PUBLISHED.labels(dropped, "lost").inc()
            logger.error("more than %d events waiting for Kafka: the oldest, to %s, is dropped",
                         self.deferred_limit, dropped)
        self._deferred.append((topic, key, message))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._deferred:
            self._sending = topic, key, message = self._deferred.popleft()
            await when_ready(lambda: self.publish(topic, key, message), f"event to {topic}")
            self._sending = None

    async def ping(self) -> None:
        await self.start()
        await self.producer.ping()

    async def stop(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            done, _ = await asyncio.wait({self._drainer}, timeout=self.deferred_drain_seconds)
            if not done:
                self._drainer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._drainer
        left = [*([self._sending] if self._sending else []), *self._deferred]
        if left:
            for topic, _, _ in left:
                EVENTS_PUBLISHED.labels(topic, "lost").inc()
            logger.error("stopping with %d deferred event(s) Kafka never took; given up", len(left))
            self._deferred.clear()
            self._sending = None
        # Not under the lock: a start that never ends (a broker whose metadata answers but whose
        # advertised address does not, and aiokafka tries for good) holds it. Given a moment, then
        # cancelled, so that a stop always ends.
        starting = self._starting
        if starting is not None and not starting.done():
            await asyncio.wait({starting}, timeout=self.start_wait_seconds)
            if not starting.done():
                logger.warning("stopping with the Kafka producer still starting after %.0f s; its start is "
                               "cancelled", self.start_wait_seconds)
                starting.cancel()
                await asyncio.wait({starting}, timeout=self.start_wait_seconds)
        await self.producer.stop()


# A dead letter's value and key at most. The original came within the broker's message limit (1 MiB by
# default, as the producer's request limit): with the headers added, one near it would be over, and
# refused on every try. Cut, it keeps enough to see what it was; its size and sha256 say the rest.
DEAD_LETTER_MAX_VALUE = 512 * 1024
DEAD_LETTER_MAX_KEY = 16 * 1024
# A reason at most (characters): a callers' reason may quote an error of PostgreSQL or a decoder whole.
DEAD_LETTER_MAX_REASON = 1000

# Errors the broker (or the producer, before sending) gives a dead letter whatever the number of tries:
# retrying them would stop the consumer at the record for good.
FINAL_SEND_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError, InvalidTopicError,
    CorruptRecordException, InvalidTimestampError, UnsupportedForMessageFormatError, PolicyViolationError,
)


class DeadLetters:
    """Sends a consumed message that cannot be handled, as its original bytes (cut to
    DEAD_LETTER_MAX_VALUE), to the dead-letter topic with where it came from and why (headers). The
    producer starts on first use: it is rare."""

    def __init__(self, bootstrap: str, topic: str, client_id: str) -> None:
        self._bootstrap, self._topic, self._client_id = bootstrap, topic, client_id
        self._producer: AIOKafkaProducer | None = None
        # Letters of several partitions' writers at once start one producer, not one each (the others
        # would run on, never stopped).
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                            enable_idempotence=True, client_id=self._client_id)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # no broker yet: the caller retries, with a new producer
                    raise
                self._producer = producer
            return self._producer

    async def _replace(self, producer: AIOKafkaProducer) -> None:
        """The next letter gets a fresh producer (unless another letter replaced this one already)."""
        if self._producer is producer:
            self._producer = None
        await within(STOP_SECONDS, "stopping the dead-letter producer", producer.stop())

    async def send(self, value: bytes, reason: str, source_topic: str, partition: int, offset: int,
                   key: bytes | None = None) -> bool:
        """True once the broker has the dead letter. False when Kafka refused it for good
        (FINAL_SEND_ERRORS): logged at error with the original's size and sha256 and counted in
        parley_events_published_total{outcome="lost"}; the caller goes past the record. Any other
        error is raised, for the caller to retry."""
        if len(reason) > DEAD_LETTER_MAX_REASON:
            reason = reason[:DEAD_LETTER_MAX_REASON - 1] + "…"
        headers = [
            ("reason", reason.encode()), ("source-topic", source_topic.encode()),
            ("source-partition", str(partition).encode()), ("source-offset", str(offset).encode()),
            ("original-size", str(len(value)).encode()),
            ("original-sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        if len(value) > DEAD_LETTER_MAX_VALUE:
            value = value[:DEAD_LETTER_MAX_VALUE]
            headers.append(("truncated", b"true"))
        if key is not None and len(key) > DEAD_LETTER_MAX_KEY:
            headers.append(("original-key-size", str(len(key)).encode()))
            key = key[:DEAD_LETTER_MAX_KEY]
        producer = await self._started()
        try:
            await producer.send_and_wait(self._topic, key=key, value=value, headers=headers)
        except BROKEN_PRODUCER_ERRORS:
            # Out of step with the broker for good: the retry gets a fresh producer.
            await self._replace(producer)
            raise
        except FINAL_SEND_ERRORS as exc:
            named = dict(headers)
            EVENTS_PUBLISHED.labels(self._topic, "lost").inc()
            logger.error("dead letter of %s[%d]@%d (%s bytes, sha256 %s; %s) refused by Kafka for good: %s; the "
                         "record is skipped without one", source_topic, partition, offset,
                         named["original-size"].decode(), named["original-sha256"].decode(), reason, exc)
            # The refused batch may leave the idempotent producer's sequence behind: the next letter
            # gets a fresh producer.
            await self._replace(producer)
            return False
        return True

    async def close(self) -> None:
        if self._producer is not None:
            await within(STOP_SECONDS, "stopping the dead-letter producer", self._producer.stop())
