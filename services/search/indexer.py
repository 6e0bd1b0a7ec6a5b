"""The search service's indexer: `python -m services.search.indexer`.

It consumes `parley.knowledge.pages.v1` (pages the scraper extracted, keyed by product key) and
writes them through the one indexing path (`Indexing`: embed, then replace the page's chunks and bump
the version in one transaction), then announces the change on `parley.knowledge.updated.v1`. Pages
are taken in batches (up to BATCH_CHUNKS chunks or BATCH_WAIT_MS) whose new chunks are embedded in
one model call; each page is still written in its own transaction, in offset order.

Nothing is lost on a crash: a batch's offsets are committed only after its pages' transactions; replaying a
page gives the same chunks (its document is replaced as a whole), so at-least-once is enough.
Undecodable messages go to the dead-letter topic; pages of a key that is unknown or revoked (a crawl
still under way when its key went) are dropped, logged and counted. At start it also embeds, in the
background, the chunks that have no embedding of the current model (knowledge written before dense
retrieval, or a model change), again after a failure worth retrying until done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from google.protobuf.message import DecodeError
from prometheus_client import Counter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never, wait_exponential

from services.common import db
from services.common.errors import FailedPrecondition, NotFound, is_transient
from services.common.kafka import STOP_SECONDS, DeadLetters, EventProducer, new_event_id, now_timestamp, within
from services.common.knowledge_store import NewChunk
from services.common.metrics import serve_metrics
from services.common.pb.parley.v1 import events_pb2
from services.common.text import storable
from services.common.timestamps import from_timestamp
from services.common.runner import run_service, when_ready
from services.search.settings import SearchSettings
from services.search import keys
from services.search.indexing import Document, Indexing

logger = logging.getLogger(__name__)


def _worth_retrying(exc: BaseException) -> bool:
    """A dependency gone, restarting or refusing writes for now (errors.is_transient: refused connections,
    dropped ones, an administrator's shutdown under a query, PostgreSQL read-only or out of disk), a
    page's transaction that lost a conflict with another writer of the same key, or the broker failing
    the page's KnowledgeUpdated announcement (a timeout, no leader, a producer to make anew): the page is
    written again (the same content: nothing changes) and announced. Dead-lettered, a page written
    while the broker was away went unannounced, and caches kept the old knowledge."""
    return is_transient(exc) or isinstance(exc, (asyncpg.exceptions.SerializationError,
                                                 asyncpg.exceptions.DeadlockDetectedError, KafkaError))


async def _retrying(call, *args):
    """`call(*args)`, again for as long as it fails with an error worth retrying (each failure logged:
    a dependency that stays away shows in the logs, not only in the lag)."""
    def waiting(state: RetryCallState) -> None:
        logger.warning("%s failed (%s); retrying in %.1f s", call.__name__, state.outcome.exception(),
                       state.next_action.sleep if state.next_action else 0.0)

    async for attempt in AsyncRetrying(retry=retry_if_exception(_worth_retrying), stop=stop_never,
                                       wait=wait_exponential(0.2, max=5), before_sleep=waiting, reraise=True):
        with attempt:
            return await call(*args)
    raise AssertionError("unreachable: tenacity returns or raises")


# A page PostgreSQL refuses for what it holds, not for its state: a value it cannot store (class 22,
# e.g. a character outside UTF-8) or one over a limit (class 54, e.g. a document name too long for
# its index). Written again it fails again: it is dead-lettered, so the pages after it are indexed.
_REFUSED = (asyncpg.exceptions.DataError, asyncpg.exceptions.ProgramLimitExceededError)


# Pages are collected for one model call until they hold BATCH_CHUNKS chunks or BATCH_WAIT_MS have
# passed since the first: a model call on a whole batch costs less per chunk than one per page.
BATCH_CHUNKS = 64
BATCH_WAIT_MS = 200


# Pages that changed nothing because their key is gone (a key id that fits but names no key, or a key
# revoked while its crawl was under way), or because a newer page of their document is written. Not
# dead letters: nothing is wrong with the page, and no replay could write it (a key is never revived).
PAGES_DROPPED = Counter("parley_indexer_pages_dropped_total", "Knowledge pages dropped because their product key "
                        "is unknown or revoked, or a newer page of their document is written.", ["reason"])


def _chunks(page: events_pb2.KnowledgePage) -> list[NewChunk]:
    return [NewChunk(c) for c in dict.fromkeys(page.chunks) if c.strip()]


def _said(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


class _Superseded(Exception):
    """A page crawled before the page last written for its document: written, it would undo that one."""


# The documents' crawl times, each moved to the page's unless it holds a later one (migration 0022).
_NOT_OLDER = """
INSERT INTO knowledge_page_times AS t (product_key_id, document, occurred_at)
SELECT $1, unnest($2::text[]), $3
ON CONFLICT (product_key_id, document) DO UPDATE SET occurred_at = excluded.occurred_at
WHERE t.occurred_at <= excluded.occurred_at
RETURNING t.document
"""


def _in_order(page: events_pb2.KnowledgePage) -> Callable[[asyncpg.Connection, str], Awaitable[None]]:
    """The check a page's transaction runs first: its key is live (keys.require_live), and the page is
    not older than what is written for the documents it replaces. Offsets order the pages of a key only
    within one owner of its partition: after a rebalance the former owner may still be writing a page
    the new owner has written since, with newer content after it. The key's row lock (require_live)
    serialises the writers of a key, so the later writer sees the earlier one's time. A page without a
    crawl time (occurred_at unset) is written unordered, as before."""
    names = sorted({storable(n) for n in (page.document, page.url if page.removed else page.old_document)} - {""})
    crawled = from_timestamp(page.occurred_at) if page.HasField("occurred_at") else None

    async def check(conn: asyncpg.Connection, key_id: str) -> None:
        await keys.require_live(conn, key_id)
        if crawled is not None and len(await conn.fetch(_NOT_OLDER, key_id, names, crawled)) < len(names):
            raise _Superseded
    return check


class PageIndexer:
    def __init__(self, settings: SearchSettings, indexing: Indexing, producer: EventProducer) -> None:
        self.settings = settings
        self.indexing = indexing
        self.producer = producer
        self._dead_letters = DeadLetters(settings.kafka_bootstrap, settings.topic("deadletter"),
                                         "parley-indexer-deadletter")
        self.pages = self.chunks = self.dropped = 0
        self._started = time.monotonic()

    async def index(self, page: events_pb2.KnowledgePage, vectors: list[bytes] | None = None) -> int | None:
        """Applies one page (with its chunks' embeddings if already computed); returns the new
        knowledge version (None: the key does not exist or is revoked, or a newer page of the document
        is written, and the page was dropped). The key is checked in the page's transaction, locked
        (keys.require_live, as AddDocument does), so a revocation that commits first is seen and one
        that comes later waits for it."""
        key_id = page.product_key_id
        try:
            if page.removed:
                _, version = await self.indexing.remove(key_id, "page", {page.document, page.url},
                                                        require=_in_order(page))
                reason = "page_removed"
            else:
                chunks = _chunks(page)
                _, _, version = await self.indexing.write(key_id, "page", page.document, page.title, page.document,
                                                          chunks, replace={page.document, page.old_document},
                                                          vectors=vectors, require=_in_order(page))
                reason = "page_changed"
                self.chunks += len(chunks)
        except NotFound:
            logger.info("page %s of a key that does not exist (%s); dropped", page.document[:200], key_id)
            PAGES_DROPPED.labels("key_unknown").inc()
            self.dropped += 1
            return None
        except FailedPrecondition:
            logger.info("page %s of a revoked key (%s); dropped", page.document[:200], key_id)
            PAGES_DROPPED.labels("key_revoked").inc()
            self.dropped += 1
            return None
        except _Superseded:
            logger.info("page %s of %s crawled before the page written for it; dropped", page.document[:200],
                        key_id)
            PAGES_DROPPED.labels("superseded").inc()
            self.dropped += 1
            return None
        self.pages += 1
        event = events_pb2.KnowledgeUpdated(event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=key_id,
                                            knowledge_version=version, reason=reason,
                                            url=page.document or page.url)
        await self.producer.publish(self.settings.topic("knowledge_updated"), key_id, event, wait=True)
        return version

    async def handle(self, value: bytes, tp: TopicPartition, offset: int) -> None:
        await self.handle_many([(value, tp, offset)])

    async def handle_many(self, records: list[tuple[bytes, TopicPartition, int]]) -> None:
        """Indexes pages in order: the chunks of all of them are embedded in one model call, then each
        page is written in its own transaction, as if handled one by one."""
        pages = []
        for value, tp, offset in records:
            page = events_pb2.KnowledgePage()
            try:
                page.ParseFromString(value)
                if not page.product_key_id or not (page.document or page.url):
                    raise DecodeError("no product key or document")
                if not keys.is_key_id(page.product_key_id):
                    raise DecodeError(f"product key id {page.product_key_id[:80]!r} is none a key can have")
                if page.HasField("occurred_at"):
                    try:
                        from_timestamp(page.occurred_at)
                    except ValueError as exc:
                        raise DecodeError(f"occurred_at is no time: {exc}") from None
            except DecodeError as exc:
                logger.warning("undecodable knowledge page at %s:%s (%s); dead-lettered", tp.topic, offset, exc)
                await self.dead_letter(value, str(exc), tp, offset)
                continue
            pages.append((page, value, tp, offset))
        written = [p for p, *_ in pages if not p.removed]
        try:
            vectors = dict(zip(map(id, written), await _retrying(self._embeddings, written)))
        except Exception:  # noqa: BLE001 - a page the model cannot take: found by embedding them one by one
            logger.exception("embedding a batch of %d pages failed; embedding them one at a time", len(written))
            vectors = {}
        for page, value, tp, offset in pages:
            try:
                if not page.removed and id(page) not in vectors:
                    vectors[id(page)] = (await _retrying(self._embeddings, [page]))[0]
                await _retrying(self.index, page, vectors.get(id(page)))
            except _REFUSED as exc:
                await self._refused(page, value, tp, offset, f"PostgreSQL refused the page: {_said(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - not worth retrying (_retrying gave it up): a bug
                # Dead-lettered with its error, where it can be looked at and replayed: left to end the
                # consumer, it ended every replica that took its partition, at each start.
                logger.exception("indexing knowledge page %s at %s:%s failed", page.document[:200], tp.topic, offset)
                await self._refused(page, value, tp, offset, f"indexing failed: {_said(exc)}")
                continue
            if self.pages % 20 == 0:
                elapsed = max(time.monotonic() - self._started, 1e-6)
                logger.info("indexed %d pages, %d chunks (%.0f chunks/s)", self.pages, self.chunks,
                            self.chunks / elapsed)

    async def _refused(self, page: events_pb2.KnowledgePage, value: bytes, tp: TopicPartition, offset: int,
                       reason: str) -> None:
        logger.error("knowledge page %s at %s:%s: %s; dead-lettered", page.document[:200], tp.topic, offset, reason)
        await self.dead_letter(value, reason, tp, offset)

    async def _embeddings(self, pages: list[events_pb2.KnowledgePage]) -> list[list[bytes]]:
        if not pages:
            return []
        documents = [Document(p.product_key_id, "page", p.title, _chunks(p)) for p in pages]
        vectors, _ = await self.indexing.embeddings_of(documents)
        return vectors

    async def dead_letter(self, value: bytes, reason: str, tp: TopicPartition, offset: int) -> None:
        await self._dead_letters.send(value, reason, tp.topic, tp.partition, offset)

    async def close(self) -> None:
        await self._dead_letters.close()


async def lag(settings: SearchSettings) -> int:
    """Pages handed over and not yet indexed (committed offsets of the indexer's group vs. the ends)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                group_id=settings.indexer_group + settings.topic_namespace)
    await consumer.start()
    try:
        topic = settings.topic("knowledge_pages")
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic)
                                                          or await _partitions(consumer, topic))]
        ends = await consumer.end_offsets(partitions)
        total = 0
        for tp in partitions:
            committed = await consumer.committed(tp)
            total += ends[tp] - (committed or 0)
        return total
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - no public call for one topic's metadata
    return consumer.partitions_for_topic(topic) or set()


async def _reembed(indexing: Indexing, producer: EventProducer, settings: SearchSettings) -> None:
    """Embeds the stale chunks, again after a failure worth retrying (PostgreSQL away or refusing writes)
    until done: each attempt takes up what is still stale. Search has the lexical arm meanwhile. Each
    batch bumps its keys' versions as it stores their vectors; the announcements go once all is done
    (until then a replica sees a new version when its cached key record expires)."""
    try:
        versions = await _retrying(indexing.reembed_stale)
    except Exception:  # noqa: BLE001 - one that would fail again (a bug): retried at the next start
        logger.exception("re-embedding stale chunks failed")
        return
    for key_id, version in versions.items():
        event = events_pb2.KnowledgeUpdated(event_id=new_event_id(), occurred_at=now_timestamp(),
                                            product_key_id=key_id, knowledge_version=version, reason="reembedded")
        try:
            await producer.publish(settings.topic("knowledge_updated"), key_id, event)
        except Exception as exc:  # noqa: BLE001 - the version is bumped: replicas see it within the key TTL
            logger.warning("announcing the re-embedded knowledge of %s (version %d) failed: %r; replicas "
                           "take it up when their cached key record expires", key_id, version, exc)


async def main(settings: SearchSettings) -> None:
    serve_metrics(settings.indexer_metrics_port)    # also what the Kubernetes probes ask
    pool = await when_ready(lambda: db.create_pool(settings.postgres_dsn, max_size=4), "indexer", attempts=60)
    producer = EventProducer(settings.kafka_bootstrap, client_id="parley-indexer")
    await when_ready(producer.start, "indexer", attempts=60)
    indexing = Indexing(pool)
    await indexing.embedder()           # the model loads before the first page is taken
    indexer = PageIndexer(settings, indexing, producer)
    consumer = AIOKafkaConsumer(
        settings.topic("knowledge_pages"), bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.indexer_group + settings.topic_namespace, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_interval_ms=10 * 60 * 1000, client_id="parley-indexer",
    )
    await when_ready(consumer.start, "indexer", attempts=60)
    reembed = asyncio.get_running_loop().create_task(_reembed(indexing, producer, settings))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    logger.info("indexer consuming %s", settings.topic("knowledge_pages"))
    work = asyncio.get_running_loop().create_task(_consume(consumer, indexer, stop))
    stopping = asyncio.get_running_loop().create_task(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            # The pages in hand get the grace period; a batch waiting for a dependency that is away
            # (PostgreSQL, the broker) is left uncommitted and indexed again at the next start.
            await asyncio.wait({work}, timeout=settings.shutdown_grace_seconds)
            if not work.done():
                logger.warning("stopping with pages in hand not indexed in %.0f s; they are indexed again at "
                               "the next start", settings.shutdown_grace_seconds)
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work                  # raises what ended the work, if it was not the stop
    finally:
        stopping.cancel()
        work.cancel()
        reembed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reembed
        await within(STOP_SECONDS, "stopping the consumer", consumer.stop())
        await indexer.close()
        await producer.stop()
        await pool.close()
        logger.info("indexer stopped")


async def _consume(consumer: AIOKafkaConsumer, indexer: PageIndexer, stop: asyncio.Event) -> None:
    """Indexes batches of pages and commits past each, until `stop` is set between two batches."""
    while not stop.is_set():
        runs = batches(await collect(consumer, stop))
        for i, records in enumerate(runs):
            await indexer.handle_many([(r.value, TopicPartition(r.topic, r.partition), r.offset) for r in records])
            last = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}   # in offset order
            try:
                await consumer.commit(last)
            except (CommitFailedError, KafkaError) as exc:
                logger.warning("commit of %s failed (%s); the next owner replays it", last, exc)
                # The partitions may be another member's by now (a batch that outlasted the poll
                # interval): the runs collected after this one are not written here, and those of the
                # partitions still ours are read again from their first record.
                _rewind(consumer, [r for later in runs[i + 1:] for r in later])
                break


def _rewind(consumer: AIOKafkaConsumer, records: list) -> None:
    first: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        first[tp] = min(first.get(tp, r.offset), r.offset)
    assigned = consumer.assignment()
    for tp, offset in first.items():
        if tp in assigned:
            consumer.seek(tp, offset)


async def collect(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> list:
    """The next pages to index: waits for one, then takes more until they hold BATCH_CHUNKS chunks or
    BATCH_WAIT_MS have passed (a lone page is not held back longer than that)."""
    records: list = []
    chunks, deadline = 0, None
    while not stop.is_set() and chunks < BATCH_CHUNKS:
        wait_ms = 500 if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
        if deadline is not None and wait_ms <= 0:
            break
        batch = await consumer.getmany(timeout_ms=wait_ms, max_records=50)
        for tp_records in batch.values():
            records.extend(tp_records)
            chunks += sum(_chunk_count(r.value) for r in tp_records)
        if records and deadline is None:
            deadline = time.monotonic() + BATCH_WAIT_MS / 1000
        if not batch and deadline is None:
            break                                                          # idle: let the caller look at stop
    return records


def batches(records: list) -> list[list]:
    """Records in runs of at most BATCH_CHUNKS chunks (a page with more is a run of its own): one
    Kafka fetch may bring hundreds of pages, and a run is embedded before any of its pages is written."""
    runs: list[list] = []
    chunks = BATCH_CHUNKS
    for record in records:
        count = _chunk_count(record.value)
        if chunks + count > BATCH_CHUNKS:
            runs.append([])
            chunks = 0
        runs[-1].append(record)
        chunks += count
    return runs


def _chunk_count(value: bytes) -> int:
    try:
        return max(len(events_pb2.KnowledgePage.FromString(value).chunks), 1)
    except DecodeError:
        return 1


if __name__ == "__main__":
    run_service("indexer", main, SearchSettings)
