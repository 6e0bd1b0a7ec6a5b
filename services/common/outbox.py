"""A bounded, durable local outbox: events are written to a SQLite file and delivered to Kafka in
order in the background, so an answer never waits on the broker and a broker outage loses nothing.

- `publish` appends one row (no network; the rows of concurrent turns go in one transaction); a
  delivery task sends the oldest rows with the idempotent producer (`acks=all`), as one record batch
  per partition (`EventProducer.send_rows`), and deletes a row
  only after the broker acknowledged it and every row before it. A failed round is retried with
  backoff (tenacity) on a fresh producer; rows acknowledged after a failed one are sent again, and
  consumers drop the copy by event_id.
- Durability: WAL journal, `synchronous` as configured. NORMAL (the default) keeps every
  appended event across a process crash or restart (the write is in the OS before `publish`
  returns) but may lose the last ones on a power loss or kernel crash; FULL fsyncs every append.
- Bounded by `max_events`: when full, new events are refused (the answer is still given),
  counted in `parley_outbox_dropped_total`, logged at error, and the `outbox` health detail turns
  NOT_SERVING. Refusing beats blocking: answers keep flowing, and what is lost is counted.
- A file that refuses a write (disk full, I/O error): the events are held in memory, up to
  `max_memory_events`, and the delivery task hands them to Kafka from there (counted in
  `parley_outbox_spilled_total`), so while the broker is up nothing acknowledged is lost; they are
  lost only if the process dies before Kafka has them. Order is kept: while events are held, new ones
  join them behind, a round sends the file's rows (all older) before them, and the next write that
  succeeds (tried at most every FILE_RETRY_SECONDS while events are held) writes the held events
  first. Beyond the bound events are refused as when full (`publish` returns False). The `outbox`
  health detail is NOT_SERVING from a failed write until a write succeeds. Rows delivered but not
  deleted (the delete is a write too) are skipped by seq until a delete succeeds.
- A file SQLite cannot read at open (corrupt, not a database) is moved aside to
  `<name>.corrupt-<UTC time>` (with its -wal and -shm), logged at error and counted in
  `parley_outbox_corrupt_files_total`; a fresh file takes its place. Its rows are not salvaged
  (`sqlite3 <file> .recover` may): a replica that cannot start delivers nothing at all.
- One process per file (an exclusive lock): two replicas must not deliver the same rows.
- Bounded in size: an event over `MAX_EVENT_BYTES` is refused at `publish` (EventTooLarge), and a
  stored one (written before the limit) is dropped at open, logged at error: Kafka would refuse it
  for ever, and the rows behind it would never be delivered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import json
import logging
import sqlite3
import time
from pathlib import Path

from google.protobuf.message import Message
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from services.common.kafka import EventProducer, event_headers, new_event_id
from services.common.metrics import OUTBOX_DELIVERED, OUTBOX_DROPPED, OUTBOX_PENDING

logger = logging.getLogger(__name__)

OUTBOX_SPILLED = Counter("parley_outbox_spilled_total", "Events held in memory, and handed to Kafka from there, "
                         "because the outbox file refused a write (disk full, I/O error), by topic.",
                         ["outbox", "topic"])
OUTBOX_CORRUPT = Counter("parley_outbox_corrupt_files_total",
                         "Outbox files SQLite could not read at open, moved aside for a fresh one.", ["outbox"])

# seq is the rowid: a new row gets the largest seq + 1, so rows keep their order and a seq is
# never reused while a row before it is still there (AUTOINCREMENT's never-reused ids cost a
# second page write per commit: 24 -> 20 µs of CPU per event at one event per commit). Files made
# with AUTOINCREMENT keep it.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY,
    topic   TEXT NOT NULL,
    key     BLOB NOT NULL,
    value   BLOB NOT NULL,
    headers TEXT NOT NULL
)
"""


# Added to an event's way to Kafka (the stream worker batches far longer): the appends of this long
# join one round, one record batch per partition. 20 -> 50 ms cut the broker's CPU per chat turn by
# a third and the response process's by ~10 % (cached Chat under ghz, concurrency 16, one run).
DELIVERY_LINGER_SECONDS = 0.05

# Key, value and headers of one event at most. Kafka refuses a record over its message limit (1 MiB by
# default: the broker's message.max.bytes, the producer's max_request_size) on every try, and the
# outbox delivers in order: one such row would hold back every event behind it.
MAX_EVENT_BYTES = 900_000
_ROW_BYTES = "length(key) + length(value) + length(headers)"   # headers are JSON with ASCII escapes


# While events are held in memory, the file is tried again at most this often: a failed attempt also
# carries the held events (up to max_memory_events rows), and with a full disk and Kafka away every
# turn would pay for that.
FILE_RETRY_SECONDS = 1.0

# What SQLite says of a file that is not (or no longer) a database it can read.
_UNREADABLE = ("SQLITE_NOTADB", "SQLITE_CORRUPT")

_HEADERS_BEFORE_TRACE: dict[str, str] = {}


def headers_json(message: Message, trace_id: str) -> str:
    """`event_headers` as stored in a row: a JSON list of [name, value] pairs. The pairs before the
    trace id are the same for every event of a type, so their JSON is made once per type."""
    name = message.DESCRIPTOR.full_name
    before = _HEADERS_BEFORE_TRACE.get(name)
    if before is None:
        pairs = [[k, v.decode()] for k, v in event_headers(message, "-")]
        assert pairs[-1][0] == "trace-id", "the trace id is the last header"
        before = _HEADERS_BEFORE_TRACE[name] = json.dumps(pairs[:-1])[:-1]
    return f'{before}, ["trace-id", {json.dumps(trace_id or new_event_id())}]]'


def _settle(waiters: list[asyncio.Future], written: bool) -> None:
    for waiter in waiters:
        if not waiter.done():  # its caller was cancelled
            waiter.set_result(written)


def _kafka_headers(stored: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in json.loads(stored)]


class OutboxFull(Exception):
    """An event refused because the outbox holds `max_events` already."""


class OutboxUnwritable(Exception):
    """The outbox file refused its last write; events are held in memory until one succeeds."""


class EventTooLarge(ValueError):
    """An event refused at publish: over MAX_EVENT_BYTES, Kafka would never accept it."""


class _RoundFailed(Exception):
    """A delivery round in which the broker did not acknowledge every row."""


class Outbox:
    """`publish(topic, key, message, trace_id=...)` like EventProducer, but local and durable."""

    def __init__(self, path: Path, producer: EventProducer, *, name: str, max_events: int = 100_000,
                 max_bytes: int = 1 << 30, max_memory_events: int = 10_000, batch: int = 500,
                 synchronous: str = "NORMAL", round_timeout_seconds: float = 30.0) -> None:
        """`max_events`, `max_bytes`: what the file holds at most (events, and bytes of their keys,
        values and headers): keep `max_bytes` below the space its volume has (Kubernetes evicts a pod
        whose emptyDir passes its sizeLimit, and the undelivered events go with it)."""
        self.path = Path(path)
        self.name = name
        self._producer = producer
        self._max = max(1, max_events)
        self._max_bytes = max(1, max_bytes)
        self._pending_bytes = 0       # of the rows in the file
        self._queued_bytes = 0
        self._max_memory = max(0, max_memory_events)
        self._batch = max(1, batch)
        self._synchronous = synchronous.upper()
        self._round_timeout = round_timeout_seconds
        self._db: sqlite3.Connection | None = None
        self._lock_file = None
        self._pending = 0
        self._queued: list[tuple[str, bytes, bytes, str]] = []  # published, written at the next loop iteration
        self._waiters: list[asyncio.Future] = []  # the publishers of the queued rows
        # Rows the file refused, oldest first, all newer than every row in the file; the first
        # `_memory_in_round` of them are in the delivery round in flight.
        self._memory: collections.deque[tuple[str, bytes, bytes, str]] = collections.deque()
        self._memory_in_round = 0
        self._unwritable = ""         # why the last write failed; "" once one succeeded
        self._file_retry_at = 0.0
        self._delivered_through = 0   # rows up to this seq are delivered, their delete failed
        self.dropped = 0
        self.spilled = 0
        self.last_error = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_drop_log = 0.0
        self._pending_gauge = OUTBOX_PENDING.labels(name)

    # --- storage --------------------------------------------------------------------------

    def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path.with_suffix(".lock"), "w")  # noqa: SIM115 - held while open
        try:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"outbox {self.path} is used by another process; give each replica its own "
                                   "directory (PARLEY_OUTBOX_DIR)") from None
            try:
                db, pending = self._connect()
            except sqlite3.DatabaseError as exc:
                if not getattr(exc, "sqlite_errorname", "").startswith(_UNREADABLE):
                    raise
                self._move_aside(exc)
                db, pending = self._connect()
        except BaseException:
            # Released, or a retried open in this process would find its own lock taken.
            lock_file.close()
            raise
        self._lock_file, self._db, self._delivered_through = lock_file, db, 0
        self._pending, self._pending_bytes = pending
        self._count_pending()
        if self._pending:
            logger.info("outbox %s holds %d undelivered event(s) from before the restart", self.path, self._pending)

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """The file opened, its schema made, oversized rows dropped; and the rows it holds and their
        bytes (reading the table is where a damaged one shows)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # The file is this process's alone (the flock in open): SQLite's own locks are taken once
            # and kept instead of several fcntl calls per transaction (20 -> 15 µs of CPU per event).
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._synchronous == 'FULL' else 'NORMAL'}")
            db.execute(_SCHEMA)
            self._drop_oversized(db)
            return db, tuple(db.execute("SELECT count(*), coalesce(sum(length(key) + length(value) + "
                                        "length(CAST(headers AS BLOB))), 0) FROM outbox").fetchone())
        except BaseException:
            db.close()
            raise

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Renames an unreadable file (and its -wal and -shm: a stale WAL would be replayed into the
        fresh file) to `<name>.corrupt-<UTC time>`, kept for whoever wants to recover it by hand."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).rename(aside.with_name(aside.name + suffix))
        OUTBOX_CORRUPT.labels(self.name).inc()
        logger.error("outbox %s cannot be read (%s): moved aside to %s and started afresh; the events it held "
                     "are not delivered", self.path, exc, aside)

    def _drop_oversized(self, db: sqlite3.Connection) -> None:
        """Stored rows over MAX_EVENT_BYTES (written before the limit) would block delivery for ever:
        deleted, each logged at error and counted as dropped."""
        dropped = db.execute(f"DELETE FROM outbox WHERE {_ROW_BYTES} > ? RETURNING seq, topic, headers, {_ROW_BYTES}",
                             (MAX_EVENT_BYTES,)).fetchall()
        for seq, topic, headers, size in dropped:
            named = dict(json.loads(headers))
            self.dropped += 1
            OUTBOX_DROPPED.labels(self.name, topic).inc()
            logger.error("outbox %s: stored event %d to %s (%s, trace id %s) dropped: %d bytes, over the limit of "
                         "%d that Kafka accepts", self.path, seq, topic, named.get("event-type", "?"),
                         named.get("trace-id", "?"), size, MAX_EVENT_BYTES)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def pending(self) -> int:
        """Events not acknowledged by Kafka yet: in the file or held in memory."""
        return self._pending + len(self._memory)

    def _count_pending(self) -> None:
        self._pending_gauge.set(self._pending + len(self._memory))

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, topic: str, key: str, message: Message, *, trace_id: str = "") -> bool:
        """Append the event; returns once it is written. The events published while the loop runs
        one iteration are written together, in one transaction (a commit per turn cost more than the
        rest of a cached turn's event). An event the file refuses is held in memory and still True. False
        when the event was dropped (outbox full, or not writable with `max_memory_events` held already),
        which is counted and logged; the caller's answer goes on. Raises EventTooLarge for an event
        over MAX_EVENT_BYTES (Kafka would never accept it), before anything is written."""
        row = (topic, key.encode(), message.SerializeToString(), headers_json(message, trace_id))
        size = len(row[1]) + len(row[2]) + len(row[3])
        if size > MAX_EVENT_BYTES:
            raise EventTooLarge(f"{message.DESCRIPTOR.full_name} event to {topic} has {size} bytes; the outbox "
                                f"takes at most {MAX_EVENT_BYTES} (Kafka's message limit)")
        if self._pending + len(self._queued) >= self._max or self._pending_bytes + self._queued_bytes >= self._max_bytes:
            self._drop(topic, f"full ({self._pending} events, {self._pending_bytes} bytes)")
            return False
        self._queued.append(row)
        self._queued_bytes += size
        loop = asyncio.get_running_loop()
        if not self._waiters:
            loop.call_soon(self._write_queued)
        # A future per caller: one cancelled meanwhile does not cancel the write the others wait on
        # (cheaper than an `asyncio.shield` of one shared future per caller).
        written = loop.create_future()
        self._waiters.append(written)
        return await written

    def _write_queued(self) -> None:
        rows, self._queued = self._queued, []
        size, self._queued_bytes = self._queued_bytes, 0     # the rows' bytes, counted as they were published
        waiters, self._waiters = self._waiters, []
        if self._memory and (self._memory_in_round or time.monotonic() < self._file_retry_at):
            self._hold(rows, waiters)  # behind the events held already
            return
        held = list(self._memory)  # older than `rows`: written before them, in the same transaction
        try:
            self._insert(held + rows if held else rows)
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            self._write_failed(exc)
            self._hold(rows, waiters)
            return
        self._memory.clear()
        self._written_again(f"{len(held)} event(s) held in memory written to it" if held else "")
        self._pending += len(held) + len(rows)
        self._pending_bytes += (_bytes_of(held) if held else 0) + size
        self._count_pending()
        self._wake.set()
        _settle(waiters, True)

    def _insert(self, rows: list[tuple[str, bytes, bytes, str]]) -> None:
        if self._db is None:
            self.open()
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO outbox (topic, key, value, headers) VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on some errors (an I/O error, a full disk)
                db.execute("ROLLBACK")
            raise

    def _hold(self, rows: list[tuple[str, bytes, bytes, str]], waiters: list[asyncio.Future]) -> None:
        """Rows the file did not take (or is not asked to take yet) wait in memory for the delivery
        task, as many as `max_memory_events` allows; the others are dropped. Rows and waiters pair up:
        each publish queues one of each."""
        taken = rows[:max(0, self._max_memory - len(self._memory))]
        self._memory.extend(taken)
        self.spilled += len(taken)
        for topic, *_ in taken:
            OUTBOX_SPILLED.labels(self.name, topic).inc()
        for topic, *_ in rows[len(taken):]:
            self._drop(topic, f"not writable, with {len(self._memory)} events held in memory already")
        for i, waiter in enumerate(waiters):
            if not waiter.done():  # its caller was cancelled
                waiter.set_result(i < len(taken))
        if taken:
            self._count_pending()
            self._wake.set()

    def _write_failed(self, exc: BaseException) -> None:
        if not self._unwritable:
            logger.error("outbox %s is not writable (%r): events are held in memory (at most %d) and handed to "
                         "Kafka from there until a write succeeds", self.path, exc, self._max_memory)
        self._unwritable = repr(exc)
        self._file_retry_at = time.monotonic() + FILE_RETRY_SECONDS

    def _written_again(self, detail: str) -> None:
        if self._unwritable:
            logger.info("outbox %s is writable again%s", self.path, f"; {detail}" if detail else "")
            self._unwritable = ""
            self._file_retry_at = 0.0

    def _drop(self, topic: str, why: str) -> None:
        self.dropped += 1
        OUTBOX_DROPPED.labels(self.name, topic).inc()
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:  # at most one line per 5 s; the counter has every drop
            self._last_drop_log = now
            logger.error("outbox %s is %s (broker: %s); event to %s dropped (%d dropped so far)",
                         self.path, why, self.last_error or "acknowledging", topic, self.dropped)

    async def ping(self) -> None:
        """Health detail: fails while the outbox refuses events, or since its file refused a write
        (until a write succeeds)."""
        if self._unwritable:
            raise OutboxUnwritable(f"outbox file not writable ({self._unwritable}); {len(self._memory)} event(s) "
                                   f"held in memory, {self.dropped} dropped")
        if self._pending >= self._max or self._pending_bytes >= self._max_bytes or self._db is None:
            raise OutboxFull(f"outbox full ({self._pending} events, {self._pending_bytes} bytes, "
                             f"{self.dropped} dropped)")

    def _save_held(self) -> None:
        if not self._memory:
            return
        held = list(self._memory)
        self._memory.clear()
        try:
            self._insert(held)
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            for topic, *_ in held:
                self.dropped += 1
                OUTBOX_DROPPED.labels(self.name, topic).inc()
            logger.error("outbox %s: stopping with %d event(s) held in memory that the file refuses (%r); dropped",
                         self.path, len(held), exc)
        else:
            self._pending += len(held)
            self._pending_bytes += _bytes_of(held)
        self._count_pending()

    # --- delivery -------------------------------------------------------------------------

    def start(self) -> None:
        self.open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._deliver_forever())

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Deliver what can be delivered within `drain_seconds`; the rest stays on disk for the next start
        (events held in memory are written to the file if it takes them now, else dropped and counted)."""
        if self._task is not None:
            deadline = time.monotonic() + drain_seconds
            while self.pending and time.monotonic() < deadline and not self._task.done():
                await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._save_held()
        if self.pending:
            # Delivered by the next process that opens this file: one on a volume that outlives the pod.
            logger.warning("stopping with %d event(s) not delivered to Kafka, kept in %s for the next start",
                           self.pending, self.path)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._producer.stop(), timeout=5.0)
        self.close()

    async def _deliver_forever(self) -> None:
        retrying = AsyncRetrying(wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
                                 retry=retry_if_exception_type(Exception))
        while True:
            async for attempt in retrying:
                with attempt:
                    await self._deliver_available()
            # Everything was delivered: sleep until the next append (or a periodic look), then let
            # the appends of the next few milliseconds join the round (one SELECT, one DELETE and
            # fuller produce requests for many turns instead of a round per turn).
            self._wake.clear()
            if not self.pending:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation that
                # comes as the event is set, and stop() would wait for this loop for good.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
            await asyncio.sleep(DELIVERY_LINGER_SECONDS)

    async def _deliver_available(self) -> None:
        """Rounds back to back while a backlog fills them (a broker back, a restart); a round that was
        not full took everything there was, and the next waits for the linger. Going on at once
        would send, under steady load, the one or two events written during the last round's round
        trip: a round per event, ~95 µs of CPU each instead of ~9 µs in full rounds."""
        while True:
            rows = [] if self._db is None else self._db.execute(
                "SELECT seq, topic, key, value, headers FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._delivered_through, self._batch)).fetchall()
            # Events held in memory are newer than every row of the file: they fill the round after them.
            held = list(itertools.islice(self._memory, self._batch - len(rows))) if self._memory else []
            if not rows and not held:
                return
            self._memory_in_round = len(held)  # kept in memory (not moved to the file) until acknowledged
            try:
                async with asyncio.timeout(self._round_timeout):
                    await self._round(rows, held)
            except Exception as exc:
                if not self.last_error:
                    logger.warning("outbox %s: broker not acknowledging (%r); %d event(s) kept for later",
                                   self.path, exc, self.pending)
                self.last_error = repr(exc)
                await self._producer.reset()
                raise
            finally:
                self._memory_in_round = 0
            if self.last_error:
                logger.info("outbox %s: broker acknowledging again; %d event(s) left", self.path, self.pending)
                self.last_error = ""
            if len(rows) + len(held) < self._batch:
                return

    async def _round(self, rows: list[tuple], held: list[tuple[str, bytes, bytes, str]]) -> None:
        await self._producer.start()
        events = [(topic, key, value, _kafka_headers(headers)) for _, topic, key, value, headers in rows]
        if held:
            events += [(topic, key, value, _kafka_headers(headers)) for topic, key, value, headers in held]
        results = await self._producer.send_rows(events)
        acked = 0
        for result in results:  # only the prefix acknowledged in full leaves the outbox: order is kept
            if isinstance(result, BaseException):
                break
            acked += 1
        from_file = min(acked, len(rows))
        if from_file:
            self._pending = max(0, self._pending - from_file)
            self._pending_bytes = max(0, self._pending_bytes - _bytes_of(row[1:] for row in rows[:from_file]))
            self._delete_through(rows[from_file - 1][0])
        for _ in range(acked - from_file):
            self._memory.popleft()   # the round's held events are the first ones: none moved meanwhile
        if acked:
            self._count_pending()
            for topic, n in collections.Counter(event[0] for event in events[:acked]).items():
                OUTBOX_DELIVERED.labels(self.name, topic).inc(n)
        if acked < len(events):
            raise _RoundFailed(f"broker refused an event: {results[acked]!r}")

    def _delete_through(self, seq: int) -> None:
        """Deletes the delivered rows up to `seq`. A full disk can refuse the delete too (it is a write):
        the rows are then skipped by seq until a delete succeeds, instead of being sent again every
        round (a restart before that sends them again; consumers drop the copies by event_id)."""
        try:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
        except sqlite3.Error as exc:
            self._write_failed(exc)
            self._delivered_through = seq
            return
        # Nothing is left at or below seq: a later row may reuse a low seq once the table is empty.
        self._delivered_through = 0
        self._written_again("")


def _bytes_of(rows) -> int:
    """Bytes of rows (topic, key, value, headers) as the file's bound counts them."""
    return sum(len(key) + len(value) + len(headers.encode()) for _, key, value, headers in rows)
