"""The hot topics consumed by a Faust-managed service with its own aiokafka consumer: one ordered
writer per partition, positioned at the offsets stored in PostgreSQL, fetching ahead and building its
next batch while it writes.

Faust's per-event stream path (a lock, several tasks and an ack per message) kept the worker at
about 4k events/s; here a fetched chunk goes to its partition's writer as it is, and the writer
writes whatever has accumulated since its last write as one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from mode import Service

from services.analytics.stream.apply import BatchApplier, Record, dependency_failing
from services.analytics.stream.decode import (EVENT_TYPE_HEADER, MAX_AHEAD_SECONDS, DeadLetter, InvalidEvent,
                                              wrong_event_type)
from services.analytics.stream.progress import (BATCH_SECONDS, EVENTS_APPLIED, EVENTS_LOST, EVENTS_SKIPPED, OFFSETS_RESET,
                                                Progress)
from services.analytics.stream.sink import Applied, Position
from services.common.kafka import STOP_SECONDS, within

logger = logging.getLogger(__name__)

# How long a revoked partition's writer may finish its write before it is cancelled.
REVOKE_GRACE_SECONDS = 10.0

# The worker is one event loop for every partition's writer and the fetch: a writer's next statement
# goes out only when the loop comes round to it, so no piece of work holds the loop for long.
# Records decoded between two turns of the loop (about 2 ms of work).
DECODE_SLICE = 250
# Records taken from the fetched data at once: aiokafka makes a ConsumerRecord of each as it hands
# them out (6 % of the worker's CPU in a profile under load, about 0.8 µs per record: a batch's
# 5,000 at once held the loop for 4 ms or more).
FETCH_SLICE = 1000
# How far a behind writer's batches may grow, in batch sizes (the default of the setting
# stream_lagging_batches). Batches of 20,000 turns cost the sink
# (its Python and PostgreSQL) 5-9 % less CPU per row than 5,000 and a third less than 1,000:
# a transaction, its round trips and its metrics upsert (one row per key, minute, strategy and
# model) are paid per batch. Small batches keep an event's wait short while the writer keeps up.
LAGGING_BATCHES = 4
# Events the worker holds at most, over all its partitions (decoded or waiting to be: a write in
# flight, the next batch, the records handed to a writer): each partition's writer gets an equal share,
# which bounds its batches and what it takes from the fetch. The share of 4 partitions (60,000) is what
# each held before there was a budget (batches up to 20,000 and 10,000 waiting, at the default batch
# size); 12 partitions on one worker held 0.9 GB on a 600k backlog without it. About 1.5 KB an event.
BUFFER_EVENTS = 240_000
# Under light load a writer starts a write at most this often: what arrives meanwhile joins the batch.
# A transaction, its round trips and its metrics upsert are paid per batch, and at a chat service's
# pace (a few hundred turns a second per partition) a writer that wrote whatever had arrived wrote
# batches of a few turns. A full batch is written at once, so under load nothing waits for this.
# At 1,500 turns/s over 4 partitions (`bench.stream_compare --load 1500`), CPU per turn of the worker,
# PostgreSQL and the broker 145 / 200 / 77 µs without it, 92 / 106 / 46 µs at 0.2 s (with the Kafka
# commits below), 44 / 67 / 29 µs at 0.5 s with FETCH_MIN_BYTES; freshness p99 there 0.13 -> 0.64 s.
MIN_WRITE_INTERVAL = 0.5
# Under light load the broker holds a fetch until this much has arrived (or 100 ms have passed):
# one fetch a tenth of a second instead of one per batch a producer sends.
FETCH_MIN_BYTES = 64 * 1024
# A fetch whose writers have had no room for this long (PostgreSQL away, their batches failing) polls
# anyway, for one record: aiokafka leaves the group after max_poll_interval (300 s) without a poll.
KEEP_POLLING_SECONDS = 30.0
# Offsets committed to Kafka (for lag monitoring and autoscaling only: PostgreSQL holds the ones that
# count) at most this often, all partitions in one request, the latest always committed in the end.
COMMIT_INTERVAL = 1.0
# ConsumerRecord.timestamp_type of a record stamped by the broker (0: by its producer, CreateTime).
LOG_APPEND_TIME = 1


@dataclass(frozen=True)
class Route:
    """How one topic's records become events (`decode(value, latest)`, `latest` the latest occurred_at
    accepted), what is built from a batch's events before its write (`prepare`: a factory of an object
    with `add(events)`, or None) and who writes them. `event_type`: the event-type header of the
    topic's events; a record whose header names another type is dead-lettered (None: not checked)."""

    decode: Callable
    applier: BatchApplier
    prepare: Callable[[], Any] | None = None
    event_type: bytes | None = None


class Assembly:
    """The next batch of a partition: its records, decoded, and what the route builds from their
    events, as they arrive."""

    __slots__ = ("records", "prepared")

    def __init__(self, route: Route) -> None:
        self.records: list[Record] = []
        self.prepared = route.prepare() if route.prepare is not None else None


class PartitionWriter:
    """Writes one partition in offset order. Starts paused: first the stored offset is read from
    PostgreSQL (for as long as that takes) and the consumer seeked to it."""

    def __init__(self, owner: EventConsumer, tp: TopicPartition, route: Route) -> None:
        self.owner, self.tp, self.route = owner, tp, route
        self.pending: deque[list[ConsumerRecord]] = deque()
        self.queued = 0
        self.paused = True
        self.stopping = False
        self._wakeup = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """The writer ends after the write in flight (if any); what it had gathered is dropped (the
        next owner reads it again from the stored offsets)."""
        self.stopping = True
        self.pending.clear()
        self.queued = 0
        self._wakeup.set()

    def offer(self, msgs: list[ConsumerRecord]) -> None:
        self.pending.append(msgs)
        self.queued += len(msgs)
        self._wakeup.set()

    @property
    def has_room(self) -> bool:
        """Whether the fetch may hand this writer more records (see EventConsumer._fetch)."""
        return not self.paused and self.queued < self.owner.max_queued()

    def _took(self, n: int) -> None:
        self.queued -= n
        if self.has_room:
            self.owner.room.set()

    async def _position(self) -> None:
        """Paused, forget what was fetched, and go to the offset PostgreSQL holds for the partition, or
        to the partition's first offset if Kafka deleted the records from there, or if the stored offset
        is past the partition's end (both said and counted: aiokafka would go to the first offset by
        itself, without a trace, and past the end every record below the stored offset would be
        dropped as applied). (Pausing is only for this: aiokafka drops a paused partition's fetched
        records.)"""
        owner = self.owner
        owner.consumer.pause(self.tp)
        self.paused = True
        self.pending.clear()
        self.queued = 0
        stored = await owner.stored_offset(self.tp)
        if stored is None:
            await owner.consumer.seek_to_beginning(self.tp)
        else:
            first, end = await owner.bounds(self.tp)
            if stored > end:
                stored = await owner.beyond_end(self.tp, stored, first, end)
            elif stored < first:
                owner.lost(self.tp, stored, first)
                stored = first
            owner.consumer.seek(self.tp, stored)
            owner.progress.advanced(self.tp.topic, self.tp.partition, stored)
        self.pending.clear()  # anything fetched while the stored offset was read is before the seek
        self.queued = 0
        owner.consumer.resume(self.tp)
        self.paused = False
        owner.room.set()

    async def _run(self) -> None:
        """Returns only once stopped: a failure other than cancellation goes back to the stored offset
        and starts again, so nothing after an unwritten event is ever stored or acknowledged."""
        while not self.stopping:
            try:
                await self._position()
                await self._write_forever()
            except Exception as exc:  # noqa: BLE001 - keep the partition going; the reason is in the log
                if self.stopping:
                    return
                logger.exception("writer of %s failed; resuming from the stored offset", self.tp)
                self.owner.progress.failing(f"{type(exc).__name__}: {exc}", dependency_failing(exc))
                await asyncio.sleep(1.0)

    async def _write_forever(self) -> None:
        """Writes batch after batch. While a batch is in PostgreSQL (where a write spends most of its
        time), what arrives is decoded and its rows built into the next batch as it comes, so a
        write starts with everything that had arrived when the one before ended, ready: an event
        waits for at most the write in flight, not also for one more, and a partition's decoding and
        row building are not added to its writes' time."""
        owner, apply = self.owner, self.route.applier.apply
        batch = Assembly(self.route)
        limit = owner.batch_size
        last_write = -MIN_WRITE_INTERVAL
        while True:
            while not batch.records:
                if self.stopping:
                    return
                if not self.pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                await self._assemble(batch, limit)
            if self.pending:  # arrived as the write before ended
                await self._assemble(batch, limit)
            await self._gather(batch, limit, last_write + MIN_WRITE_INTERVAL)
            if self.stopping:
                return
            # A full batch with more waiting: the writer is behind, and the next batch may be larger
            # (up to `lagging_batches` batch sizes); once a batch is not full, back to the batch size.
            behind = len(batch.records) >= limit and self.pending
            limit = min(2 * limit, owner.max_batch()) if behind else owner.batch_size
            records = batch.records
            started = time.perf_counter()
            last_write = time.monotonic()
            writing = asyncio.ensure_future(apply(records, batch.prepared))
            writing.add_done_callback(self._wake)
            batch = Assembly(self.route)
            try:
                while not writing.done():
                    if self.pending and len(batch.records) < limit:
                        await self._assemble(batch, limit)
                        continue
                    self._wakeup.clear()  # set again by an offer or by the write's end
                    await self._wakeup.wait()
                applied = writing.result()
            except BaseException:
                # The write's transaction rolls back or has committed; either way _run goes back to
                # the stored offset, and events below it are dropped inside the next transaction.
                writing.cancel()
                raise
            owner.applied(self.tp, records, applied, time.perf_counter() - started)
            if self.stopping:
                return

    def _wake(self, _future: asyncio.Future) -> None:
        self._wakeup.set()

    async def _gather(self, batch: Assembly, limit: int, until: float) -> None:
        """Adds what arrives to a batch that is not full until the monotonic time `until`."""
        while not self.stopping and len(batch.records) < limit and (left := until - time.monotonic()) > 0:
            if self.pending:
                await self._assemble(batch, limit)
                continue
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), left)

    async def _assemble(self, batch: Assembly, limit: int) -> None:
        """Decodes what has arrived into `batch`, up to `limit` records (a fetched chunk is not split),
        letting the loop run every DECODE_SLICE records: the other writers' statements go out
        between slices, whether this writer has a write in flight or is about to start one."""
        owner, decode, event_type, prepared = self.owner, self.route.decode, self.route.event_type, batch.prepared
        while self.pending and len(batch.records) < limit:
            msgs = self.pending.popleft()
            self._took(len(msgs))
            for i in range(0, len(msgs), DECODE_SLICE):
                records = await owner.decode(msgs[i:i + DECODE_SLICE], decode, event_type)
                if prepared is not None:
                    prepared.add([r.event for r in records if r.event is not None])
                batch.records.extend(records)
                await asyncio.sleep(0)


def _header(headers) -> bytes | None:
    """The record's event-type header, or None."""
    for name, value in headers or ():
        if name == EVENT_TYPE_HEADER:
            return value
    return None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner.stop_writers(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.owner.start_writers(assigned)


class EventConsumer(Service):
    """Consumes `routes`' topics in the Kafka group `group_id`; the offsets that count are the ones
    the sink stores with the data (Kafka's are committed after them, for lag monitoring only), read with
    `stored_offsets()` and lowered, past a partition's end only, with `lower_offset(topic, partition, offset)`."""

    def __init__(self, *, bootstrap: str, group_id: str, routes: dict[str, Route], progress: Progress,
                 stored_offsets: Callable, lower_offset: Callable, send_dead_letter: Callable, on_minutes: Callable,
                 batch_size: int, fetch_max_bytes: int, partition_fetch_bytes: int,
                 session_timeout_seconds: float, lagging_batches: int = LAGGING_BATCHES,
                 buffer_events: int = BUFFER_EVENTS, max_ahead_seconds: float = MAX_AHEAD_SECONDS,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.routes = routes
        self.progress = progress
        self.batch_size = batch_size
        self.lagging_batches = max(1, lagging_batches)
        self.buffer_events = buffer_events
        self.max_ahead_seconds = max_ahead_seconds
        self.room = asyncio.Event()     # set when a writer may take more records
        self._stored_offsets = stored_offsets
        self._lower_offset = lower_offset
        self._send_dead_letter = send_dead_letter
        self._on_minutes = on_minutes
        self.writers: dict[TopicPartition, PartitionWriter] = {}
        self._fetching: asyncio.Future | None = None
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._committing: asyncio.Future | None = None
        self._last_commit = 0.0
        self._config = dict(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=partition_fetch_bytes, fetch_max_wait_ms=100, fetch_min_bytes=FETCH_MIN_BYTES,
            session_timeout_ms=int(session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(max(1.0, session_timeout_seconds / 3) * 1000),
            # A rebalance waits for the revoked writers (their grace, then the offsets' commit): with
            # the default (the session timeout) a slow PostgreSQL made the member miss the rebalance
            # and caused a second one.
            rebalance_timeout_ms=int((REVOKE_GRACE_SECONDS + STOP_SECONDS + 10) * 1000),
        )
        self.consumer: AIOKafkaConsumer = None  # type: ignore[assignment] - created on start, in the loop

    async def on_start(self) -> None:
        self.consumer = AIOKafkaConsumer(**self._config)
        self.consumer.subscribe(list(self.routes), listener=_Rebalance(self))
        await self.consumer.start()
        self._fetching = self.add_future(self._fetch())

    async def on_stop(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
        await self.stop_writers(list(self.writers))
        if self._committing is not None:
            self._committing.cancel()
        if self.consumer is not None:
            await within(STOP_SECONDS, "stopping the consumer", self.consumer.stop())

    async def _fetch(self) -> None:
        """Hands each fetched chunk to its partition's writer and fetches the next meanwhile.

        Records are taken only for the partitions whose writers have room (fewer than `max_queued`
        waiting); another partition's fetched records stay in aiokafka's fetcher, which fetches a
        partition again only once they are taken: at most one fetch response per partition is held,
        whatever the backlog. (Pausing a partition instead made aiokafka drop the rest of its fetched
        response, up to 8 MiB, and fetch and unpack it again on resume: a 3,000-turn backlog took 31
        fetches instead of one; on a 600k-event backlog, alternated with this, 11-13 % more of the
        worker's CPU per event and 9-12 % more memory at its peak.)"""
        polled = time.monotonic()
        while not self.should_stop:
            ready = [tp for tp, w in self.writers.items() if w.has_room]
            if not ready and time.monotonic() - polled < KEEP_POLLING_SECONDS:
                self.room.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.room.wait(), 0.5)
                continue
            try:
                if ready:
                    # While a writer has no room, the wait for the others' records is short: it gets
                    # room back as soon as its writer takes a chunk, and must not wait behind them.
                    chunks = await self.consumer.getmany(
                        *ready, timeout_ms=500 if len(ready) == len(self.writers) else 50,
                        max_records=min(self.batch_size, FETCH_SLICE))
                else:
                    # No writer has had room for long (PostgreSQL away), or none is assigned: aiokafka
                    # leaves the group after max_poll_interval without a poll and does not join it
                    # again until it polls. A poll of at most one record keeps it a member (and, with
                    # no partition left, lets it join again): the record joins its writer's queue.
                    chunks = await self.consumer.getmany(timeout_ms=100, max_records=1)
                polled = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - the broker away or a rebalance: fetch again
                logger.warning("fetching failed (%s); fetching again", exc)
                await asyncio.sleep(1.0)
                continue
            for tp, msgs in chunks.items():
                writer = self.writers.get(tp)
                if writer is not None and msgs:
                    writer.offer(msgs)

    def _share(self) -> int:
        """Each writer's third of its share of the buffer: its batch in flight, its next batch and
        what waits for it may each hold about this much."""
        return self.buffer_events // max(1, len(self.writers)) // 3

    def max_batch(self) -> int:
        """The largest batch a writer that is behind may write: `lagging_batches` batch sizes, less
        when many partitions share the buffer (never less than one batch size)."""
        return max(self.batch_size, min(self.lagging_batches * self.batch_size, self._share()))

    def max_queued(self) -> int:
        """Records a writer may have waiting before the fetch stops taking its partition's: two batch
        sizes, less when many partitions share the buffer (never less than one fetched slice)."""
        return max(min(self.batch_size, FETCH_SLICE), min(2 * self.batch_size, self._share()))

    def start_writers(self, assigned) -> None:
        for tp in assigned:
            if tp not in self.writers and tp.topic in self.routes:
                self.writers[tp] = PartitionWriter(self, tp, self.routes[tp.topic])

    async def stop_writers(self, revoked, grace: float = REVOKE_GRACE_SECONDS) -> None:
        """A revoked partition's writer finishes its write (or is cancelled: its transaction then
        rolls back and the next owner writes the batch again); what it had queued is dropped."""
        writers = [self.writers.pop(tp) for tp in list(revoked) if tp in self.writers]
        for w in writers:
            self.progress.forget(w.tp.topic, w.tp.partition)
        if not writers:
            return
        for w in writers:
            w.stop()
        done, pending = await asyncio.wait([w.task for w in writers], timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # The partitions' latest applied offsets, while this consumer still owns them.
        offsets = {w.tp: self._uncommitted.pop(w.tp) for w in writers if w.tp in self._uncommitted}
        if offsets and self.consumer is not None:
            # Best effort, as every commit to Kafka here (the offsets are stored with the data).
            await within(STOP_SECONDS, "committing the revoked partitions' offsets", self.consumer.commit(offsets))

    async def stored_offset(self, tp: TopicPartition) -> int | None:
        """The stored next offset of `tp`, waiting out PostgreSQL being away."""
        applier = self.routes[tp.topic].applier
        stored = await applier.retrying(self._stored_offsets)
        return stored.get((tp.topic, tp.partition))

    async def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """The first offset `tp` still holds (records below it were deleted) and its end (the offset of
        the next record written), waiting out Kafka being away."""
        applier = self.routes[tp.topic].applier
        first = (await applier.retrying(lambda: self.consumer.beginning_offsets([tp])))[tp]
        end = (await applier.retrying(lambda: self.consumer.end_offsets([tp])))[tp]
        return first, end

    async def beyond_end(self, tp: TopicPartition, stored: int, first: int, end: int) -> int:
        """The stored offset is past the partition's end: these are not the records it counted (the topic
        deleted and made again, or Kafka's data lost while PostgreSQL kept its own). The stored offset is
        lowered to the partition's first offset, which is returned: read from there, an event stored
        before is known by its event id and not counted again. Left as it was, every record below it
        would be dropped as applied, for good, with a lag of 0."""
        OFFSETS_RESET.labels(tp.topic).inc()
        logger.error("%s[%d]: the stored offset %d is past the partition's end %d (the topic made again, or "
                     "Kafka's data lost); reading the partition again from offset %d",
                     tp.topic, tp.partition, stored, end, first)
        applier = self.routes[tp.topic].applier
        await applier.retrying(lambda: self._lower_offset(tp.topic, tp.partition, first))
        self.progress.forget(tp.topic, tp.partition)
        return first

    def lost(self, tp: TopicPartition, stored: int, first: int) -> None:
        """Records from the stored offset to `first` were deleted by Kafka before they were applied: their
        events are missing from the metrics and conversations for good."""
        EVENTS_LOST.labels(tp.topic).inc(first - stored)
        logger.error("%s[%d]: %d record(s), offsets %d to %d, were deleted from Kafka (retention or delete-records) "
                     "before this worker applied them; their events are lost to analytics; going on from offset %d",
                     tp.topic, tp.partition, first - stored, stored, first - 1, first)

    async def decode(self, msgs: list[ConsumerRecord], decode: Callable,
                     event_type: bytes | None = None) -> list[Record]:
        """The records' events; a record whose event-type header names another type than `event_type`
        (when both are there), a value that does not decode, or whose event is stamped more than
        `max_ahead_seconds` ahead of the time it reached Kafka, is dead-lettered (its record has no
        event). That time is the broker's, the record's timestamp where the topic keeps LogAppendTime
        (TOPIC_CONFIGS: the turns and feedback topics), and so neither a worker's clock behind (which
        would dead-letter every live event for good) nor a producer's ahead (the record's CreateTime is
        that producer's clock) decides; on a topic that keeps CreateTime, this worker's clock."""
        records = []
        now = time.time()
        ahead = self.max_ahead_seconds
        for m in msgs:
            pos = Position(m.topic, m.partition, m.offset)
            reference = m.timestamp / 1000.0 if m.timestamp_type == LOG_APPEND_TIME else now
            try:
                if event_type is not None and (problem := wrong_event_type(_header(m.headers), event_type)):
                    raise InvalidEvent(problem)
                event = decode(m.value, reference + ahead)
            except InvalidEvent as exc:
                letter = DeadLetter(m.topic, m.partition, m.offset, m.key, m.value, str(exc))
                await self.routes[m.topic].applier.retrying(lambda letter=letter: self._send_dead_letter(letter))
                event = None
            records.append(Record(pos, m.key, m.value, event))
        return records

    def applied(self, tp: TopicPartition, records: list[Record], applied: Applied, seconds: float) -> None:
        BATCH_SECONDS.labels(tp.topic).set(seconds)
        EVENTS_APPLIED.labels(tp.topic).inc(applied.applied)
        EVENTS_SKIPPED.labels(tp.topic).inc(applied.skipped)
        self._on_minutes(applied.minutes)
        if not records:
            return
        next_offset = records[-1].position.offset + 1
        self.progress.advanced(tp.topic, tp.partition, next_offset)
        self._uncommitted[tp] = OffsetAndMetadata(next_offset, "")
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._commit_soon())

    async def _commit_soon(self) -> None:
        """Commits the latest applied offsets to Kafka COMMIT_INTERVAL after the last commit, until
        none is left: offsets applied while a commit is in flight, or whose commit failed, go in the
        next one. Best effort: PostgreSQL holds the offsets that count."""
        while self._uncommitted and self.consumer is not None:
            await asyncio.sleep(max(0.0, self._last_commit + COMMIT_INTERVAL - time.monotonic()))
            offsets, self._uncommitted = self._uncommitted, {}
            self._last_commit = time.monotonic()
            offsets = {tp: o for tp, o in offsets.items() if tp in self.writers}   # not a revoked partition's
            if not offsets:
                continue
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a rebalance or the broker away: tried again
                logger.debug("committing offsets to Kafka failed: %s", exc)
                for tp, offset in offsets.items():   # unless a newer one came meanwhile
                    if tp in self.writers:
                        self._uncommitted.setdefault(tp, offset)

    async def observe_lag(self) -> None:
        for tp in list(self.writers):
            with contextlib.suppress(Exception):  # a rebalance in progress: next tick tries again
                self.progress.observe_lag(tp.topic, tp.partition, self.consumer.highwater(tp),
                                          await self.consumer.position(tp))
