"""Crawl worker: `python -m services.scraper.worker`, a Kafka consumer group over parley.crawl.requests.v1.

Partitions are crawled in parallel (one job at a time per partition, so the jobs of one key never
overlap, and at most `PARLEY_SCRAPER_MAX_JOBS` at once); a long crawl holds up only the requests behind
it on its own partition, never another partition's. An offset is committed only once its job's final
progress is in PostgreSQL, so a worker that dies mid-job leaves the request to be crawled again by
whichever worker gets the partition (cheap: the re-crawl is incremental)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections import deque
from collections.abc import Callable

import asyncpg
from prometheus_client import Counter
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import RecordMetadata
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from google.protobuf.message import DecodeError

from services.common import db
from services.common.errors import is_transient
from services.common.kafka import STOP_SECONDS, DeadLetters, EventProducer, committed_past, within
from services.common.pb.parley.v1 import events_pb2
from services.common.runner import run_service, when_ready
from services.common.metrics import serve_metrics
from services.scraper.settings import ScraperSettings
from services.scraper import jobs
from services.scraper.crawler import Crawler, CrawlSpec, PageStore, Progress
from services.scraper.fetching import HostGate, new_fetcher
from services.scraper.isolation import Extractor

logger = logging.getLogger(__name__)
MAX_PAGE_MESSAGE_BYTES = 900_000   # under Kafka's default message size limit (1 MB)
# A lease renewal that failed as PostgreSQL away does is tried again this soon (at most a tenth of the
# lease), until the lease runs out.
LEASE_RETRY_SECONDS = 1.0
RETRY_SECONDS = 2.0                # a request that failed (not its crawl: e.g. PostgreSQL gone) is taken again after

# What PostgreSQL refuses for a value of the request (class 22, e.g. a job id of the wrong type; 23; 54):
# refused again every time. Its other refusals are of its own state (read-only or out of disk, a lock or
# serialization conflict, a schema not migrated yet) and pass.
_REFUSED_VALUES = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)


RETENTION_DELETED = Counter(
    "parley_crawler_retention_deleted_total", "Rows the crawl worker deleted as older than their retention.",
    ["table"],
)
CONSUMER_RESTARTS = Counter(
    "parley_crawler_consumer_restarts_total", "Consumers of crawl requests replaced after their polls failed.")
FIRST_RETENTION_RUN_SECONDS = 30.0


async def keep_crawl_jobs(pool: asyncpg.Pool, settings: ScraperSettings) -> None:
    """Deletes the finished jobs past their retention soon after start, then every interval (a failed
    run, e.g. PostgreSQL away, is tried again at the next)."""
    days, interval = settings.retention_crawl_jobs_days, settings.retention_interval_seconds
    if days <= 0:
        return
    await asyncio.sleep(min(FIRST_RETENTION_RUN_SECONDS, interval))
    while True:
        try:
            deleted = await jobs.delete_finished(pool, days * 86400, settings.retention_batch_rows,
                                                 on_batch=RETENTION_DELETED.labels("crawl_jobs").inc)
            if deleted is not None:
                logger.info("retention run: deleted %d crawl job(s) finished more than %g days ago", deleted, days)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the jobs wait for the next run
            logger.warning("retention of crawl jobs failed: %s", exc)
        await asyncio.sleep(interval)


def _of_the_request(exc: BaseException) -> bool:
    """Whether handling the request failed for the request itself, so would fail every time: a value
    PostgreSQL refuses, or a bug. Not for a dependency away or refusing writes for now (is_transient),
    nor PostgreSQL's other refusals: dead-lettered, an accepted crawl would stay queued forever."""
    if is_transient(exc):
        return False
    return not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, _REFUSED_VALUES)


class CrawlWorker:
    def __init__(self, settings: ScraperSettings, pool: asyncpg.Pool, producer: EventProducer) -> None:
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"   # holder of job leases
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self._dead_letters = DeadLetters(settings.kafka_bootstrap, settings.topic("deadletter"),
                                         "parley-crawler-deadletter")
        self.extractor = Extractor.from_settings(settings)    # every job's pages
        # One politeness gate per site for all of this worker's jobs: two tenants crawling one site take
        # turns at its Crawl-delay and request slots, instead of each job asking at that pace.
        self.host_gates: dict[str, HostGate] = {}

    async def handover(self, page: events_pb2.KnowledgePage) -> RecordMetadata | None:
        """A crawled page to the search service's indexer; returns once Kafka has it (acks=all), with its
        partition and offset. A page over the size of one Kafka message keeps its first chunks (a rare,
        very long page)."""
        if page.ByteSize() > MAX_PAGE_MESSAGE_BYTES:
            kept, size = [], 0
            for chunk in page.chunks:
                size += len(chunk.encode()) + 8
                if size > MAX_PAGE_MESSAGE_BYTES - 4096:
                    break
                kept.append(chunk)
            logger.warning("page %s: %d of %d chunks handed over (message size limit)", page.document, len(kept),
                           len(page.chunks))
            del page.chunks[:]
            page.chunks.extend(kept)
        return await self.producer.publish(self.settings.topic("knowledge_pages"), page.product_key_id, page, wait=True)

    async def _indexed(self, job_id: str, handed: dict[TopicPartition, int]) -> str:
        """Waits until the search service's indexer has committed past every page the job handed over,
        so that a job reported done answers questions at once: "" then, else what to report."""
        if not handed:
            return ""
        settings = self.settings
        if await committed_past(settings.kafka_bootstrap, settings.indexer_group + settings.topic_namespace, handed,
                                timeout=settings.scraper_index_wait_seconds, stall=settings.scraper_index_stall_seconds):
            return ""
        logger.warning("crawl job %s: its pages were not indexed (the search indexer stalled or is behind)", job_id)
        return ("the search service has not indexed the pages handed over yet (its indexer made no progress for "
                f"{settings.scraper_index_stall_seconds:g} s, or took over {settings.scraper_index_wait_seconds:g} s; "
                "is it running?); they are indexed when it catches up")

    async def _claim(self, job_id: str) -> float | None:
        """Waits while another worker holds the job (after a rebalance the previous owner of the
        partition may still be crawling it); once this worker holds it, the loop time at which the claim
        that took it was asked (the lease runs from then at the latest); None: nothing to do."""
        lease = self.settings.scraper_job_lease_seconds
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            outcome = await jobs.claim(self.pool, job_id, self.worker_id, lease)
            if outcome == "claimed":
                return asked
            if outcome == "unknown":
                logger.warning("crawl request for unknown job %s; ignored", job_id)
                return None
            if outcome == "finished":
                logger.info("crawl job %s is already finished; skipped", job_id)
                return None
            await asyncio.sleep(min(1.0, lease / 5))

    async def _keep_lease(self, job_id: str, crawl: asyncio.Future, held_until: float) -> None:
        """Renews the lease every third of it while the crawl runs (`held_until`: the loop time the lease
        runs to), so that two workers never crawl one job:
        - the renewal refused (the job was cancelled, or taken over by a worker that presumed this one
          dead): the crawl is stopped, and this returns;
        - a renewal that fails as PostgreSQL away does is tried again every LEASE_RETRY_SECONDS (at most a
          tenth of the lease); when the lease could not be renewed before it runs out (another worker may
          take the job then) the crawl is stopped and the last error raised;
        - anything else (a bug): logged, the crawl is stopped, the error raised."""
        lease = self.settings.scraper_job_lease_seconds
        retry = min(LEASE_RETRY_SECONDS, lease / 10)
        loop = asyncio.get_running_loop()
        wait = lease / 3
        try:
            while True:
                await asyncio.sleep(wait)
                if crawl.done():
                    return
                asked = loop.time()
                try:
                    # A renewal still unanswered when the lease runs out confirms nothing in time (one asked
                    # late, the loop having been held up, is given a moment: it may find the job still ours).
                    async with asyncio.timeout(max(retry, held_until - asked)):
                        renewed = await jobs.renew(self.pool, job_id, self.worker_id, lease)
                except Exception as exc:  # noqa: BLE001 - sorted below: PostgreSQL away is tried again
                    if not is_transient(exc) or held_until - loop.time() <= retry:
                        raise
                    logger.warning("crawl job %s: lease not renewed (%s); trying again in %g s, %.1f s before it "
                                   "runs out", job_id, exc, retry, held_until - loop.time())
                    wait = retry
                    continue
                if not renewed:
                    crawl.cancel()
                    await self._log_lost_lease(job_id)
                    return
                held_until, wait = asked + lease, lease / 3
        except Exception as exc:
            crawl.cancel()
            if is_transient(exc):
                logger.error("crawl job %s: lease not renewed before it ran out (%r); stopping the crawl, the "
                             "request is taken again", job_id, exc)
            else:
                logger.exception("crawl job %s: renewing the lease failed; stopping the crawl", job_id)
            raise

    async def _log_lost_lease(self, job_id: str) -> None:
        """Says why the job is no longer this worker's (the crawl has stopped already)."""
        try:
            state = await jobs.job_state(self.pool, job_id)
        except Exception as exc:  # noqa: BLE001 - only the log line depends on it
            logger.warning("crawl job %s: lease lost (cancelled or taken over; its state could not be read: %s); "
                           "stopping", job_id, exc)
            return
        if state == "cancelled":
            logger.info("crawl job %s cancelled; stopping", job_id)
        else:
            logger.warning("crawl job %s: lease lost to another worker; stopping", job_id)

    async def run_job(self, request: events_pb2.CrawlRequested) -> Progress | None:
        claimed = await self._claim(request.job_id)
        if claimed is None:
            return None
        spec = CrawlSpec(
            job_id=request.job_id, product_key_id=request.product_key_id, seed_urls=list(request.seed_urls),
            sitemap_url=request.sitemap_url, max_pages=request.max_pages or jobs.DEFAULT_MAX_PAGES,
            max_depth=request.max_depth or jobs.DEFAULT_MAX_DEPTH, include=list(request.include),
            exclude=list(request.exclude),
        )
        me = self.worker_id
        logger.info("crawl job %s started for %s", spec.job_id, spec.product_key_id)

        async def report(progress: Progress) -> None:
            await jobs.save_progress(self.pool, spec.job_id, progress, owner=me)

        handed: dict[TopicPartition, int] = {}   # the last offset handed over per partition

        async def handover(page: events_pb2.KnowledgePage) -> None:
            record = await self.handover(page)
            if record is not None:
                tp = TopicPartition(record.topic, record.partition)
                handed[tp] = max(handed.get(tp, -1), record.offset)

        # A crawl's requests wait their turn at a site as long as its Crawl-delay asks (the job's time limit
        # bounds them), not within each request's time.
        async with new_fetcher(self.settings, deadline_covers_wait=False, gates=self.host_gates) as fetcher:
            crawler = Crawler(
                spec, fetcher, PageStore(self.pool, spec.product_key_id, handover, spec.job_id),
                concurrency=self.settings.scraper_job_concurrency, on_progress=report, extractor=self.extractor,
            )
            async def crawled_and_indexed() -> tuple[Progress, str]:
                limit = self.settings.scraper_job_max_seconds
                try:
                    async with asyncio.timeout(limit):
                        progress = await crawler.run()
                except TimeoutError:
                    progress = crawler.progress
                    crawler.problems.append(f"stopped at the time limit of {limit:g} s (PARLEY_SCRAPER_JOB_MAX_SECONDS)")
                    logger.warning("crawl job %s: stopped at the time limit of %g s", spec.job_id, limit)
                return progress, await self._indexed(spec.job_id, handed)   # the lease is kept meanwhile

            crawl = asyncio.ensure_future(crawled_and_indexed())
            held_until = claimed + self.settings.scraper_job_lease_seconds
            keeper = asyncio.ensure_future(self._keep_lease(spec.job_id, crawl, held_until))
            # A keeper that ends while the crawl runs, however it ended, stops the crawl: no crawl goes on
            # under a lease nobody renews.
            keeper.add_done_callback(lambda _: crawl.cancel())
            try:
                progress, not_indexed = await crawl
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is None or not current.cancelling():
                    return await self._stopped_by_lease(keeper, spec.job_id, crawler.progress)
                await self._interrupted(spec.job_id, crawler.progress)
                raise   # the worker stops: the partition's next owner resumes the job
            except Exception as exc:  # noqa: BLE001 - the job fails, the worker goes on
                logger.exception("crawl job %s failed", spec.job_id)
                await jobs.save_progress(self.pool, spec.job_id, crawler.progress, "failed", str(exc)[:500], owner=me)
                return crawler.progress
            finally:
                keeper.cancel()
                crawl.cancel()
                await asyncio.gather(keeper, crawl, return_exceptions=True)
        # Done once its pages are searchable, with what kept it from pages when something did (a
        # robots.txt that could not be read).
        problems = [*crawler.problems, not_indexed]
        await jobs.save_progress(self.pool, spec.job_id, progress, "done", "; ".join(p for p in problems if p)[:500],
                                 owner=me)
        logger.info("crawl job %s done: %s", spec.job_id, progress.as_dict())
        return progress

    async def _stopped_by_lease(self, keeper: asyncio.Future, job_id: str, progress: Progress) -> Progress | None:
        """The end of a job whose crawl its lease keeper stopped: None when the job is no longer this
        worker's (cancelled, or taken over); the keeper's error raised when PostgreSQL was away past the
        lease (a dependency away: the request is taken again from its offset); otherwise the job fails."""
        await asyncio.wait([keeper])
        error = keeper.exception()
        if error is None:
            return None
        if is_transient(error):
            await self._interrupted(job_id, progress)
            raise error
        await jobs.save_progress(self.pool, job_id, progress, "failed",
                                 f"the job's lease could not be renewed: {type(error).__name__}: {error}"[:500],
                                 owner=self.worker_id)
        return progress

    async def _interrupted(self, job_id: str, progress: Progress) -> None:
        """Queued again with its progress, and released, when PostgreSQL can be reached."""
        with contextlib.suppress(Exception):
            await jobs.save_progress(self.pool, job_id, progress, "queued",
                                     "interrupted; the job resumes when a worker takes it again", owner=self.worker_id)

    async def dead_letter(self, value: bytes, reason: str, tp: TopicPartition, offset: int) -> None:
        await self._dead_letters.send(value, reason, tp.topic, tp.partition, offset)

    async def close(self) -> None:
        await self.extractor.close()
        await self._dead_letters.close()

    async def handle(self, value: bytes, tp: TopicPartition, offset: int) -> None:
        request = events_pb2.CrawlRequested()
        try:
            request.ParseFromString(value)
            if not request.job_id:
                raise DecodeError("no job_id")
        except DecodeError as exc:
            logger.warning("undecodable crawl request at %s:%s (%s); dead-lettered", tp.topic, offset, exc)
            await self.dead_letter(value, str(exc), tp, offset)
            return
        await self.run_job(request)


async def main(settings: ScraperSettings) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    serve_metrics(settings.crawler_metrics_port)
    pool = await when_ready(lambda: db.create_pool(settings.postgres_dsn, max_size=settings.scraper_max_jobs * 4),
                            "crawl worker", attempts=60)
    producer = EventProducer(settings.kafka_bootstrap, client_id="parley-crawler")
    await when_ready(producer.start, "crawl worker", attempts=60)
    worker = CrawlWorker(settings, pool, producer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    retention = asyncio.create_task(keep_crawl_jobs(pool, settings))
    try:
        await consume(settings, worker, stop, lambda: _consumer(settings))
    finally:
        retention.cancel()
        await worker.close()
        await producer.stop()
        await pool.close()
        logger.info("crawl worker stopped")


def _consumer(settings: ScraperSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.scraper_group_id + settings.topic_namespace,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=60 * 60 * 1000,   # the loop polls every 0.5 s, jobs in flight or not; a wide bound
        client_id="parley-crawler",
    )


async def consume(settings: ScraperSettings, worker: CrawlWorker, stop: asyncio.Event,
                  new_consumer: Callable[[], AIOKafkaConsumer]) -> None:
    """Crawl requests of the group's partitions, until `stop`. A consumer whose polls fail with a Kafka
    error is replaced by a new one (its jobs get the grace period, then are left uncommitted for the
    group): aiokafka ends its group coordination for good on an error it does not expect (uvloop's
    "the handler is closed" on a connection the broker dropped), and every poll after raises it; the
    worker went down with it. The first consumer that cannot start within its attempts still ends
    the worker, as before."""
    def subscribed() -> tuple[AIOKafkaConsumer, _PartitionWork]:
        consumer = new_consumer()
        work = _PartitionWork(consumer, worker, settings.scraper_max_jobs)
        consumer.subscribe([settings.topic("crawl_requests")], listener=_Assignments(work))
        return consumer, work

    consumer, work = subscribed()
    await when_ready(consumer.start, "crawl worker", attempts=60)
    logger.info("crawl worker consuming %s", settings.topic("crawl_requests"))
    try:
        while not stop.is_set():
            try:
                # Polled even while every job slot is taken: the partitions in hand are paused, and a
                # consumer that does not poll for max_poll_interval_ms leaves the group.
                batch = await consumer.getmany(timeout_ms=500, max_records=settings.scraper_max_jobs)
            except KafkaError as exc:
                CONSUMER_RESTARTS.inc()
                logger.warning("the crawl requests' consumer failed (%r); starting a new one", exc)
                await work.close(settings.shutdown_grace_seconds)
                await within(STOP_SECONDS, "stopping the consumer", consumer.stop())
                consumer, work = subscribed()
                if not await _started(consumer, stop):
                    return
                continue
            for tp, records in batch.items():
                work.add(tp, records)
    finally:
        # Give the jobs the grace period, then leave them uncommitted for the next owner.
        await work.close(settings.shutdown_grace_seconds)
        await within(STOP_SECONDS, "stopping the consumer", consumer.stop())


async def _started(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
    """The consumer started (tried until it is, the broker perhaps away), or False once `stop` is set."""
    starting = asyncio.ensure_future(when_ready(consumer.start, "crawl worker"))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    return False


class _PartitionWork:
    """The crawl requests in hand, one task per partition: each partition's requests in order, one at a
    time, the partitions in parallel, at most `max_jobs` jobs running at once (the others' tasks wait for
    a slot). A partition with requests in hand is paused (nothing more is fetched from it) until they
    are done, so the poll loop goes on taking other partitions' requests while a long crawl runs, and
    what is in hand is at most one poll's worth per partition."""

    def __init__(self, consumer: AIOKafkaConsumer, worker: CrawlWorker, max_jobs: int) -> None:
        self._consumer = consumer
        self._worker = worker
        self._slots = asyncio.Semaphore(max_jobs)
        self._queues: dict[TopicPartition, deque] = {}
        self._tasks: dict[TopicPartition, asyncio.Task] = {}
        self._closing = False

    def add(self, tp: TopicPartition, records) -> None:
        self._queues.setdefault(tp, deque()).extend(records)
        self._pause([tp])
        if tp not in self._tasks:
            self._tasks[tp] = asyncio.create_task(self._drain(tp))

    def _pause(self, partitions) -> None:
        for tp in partitions:
            with contextlib.suppress(IllegalStateError):      # revoked meanwhile
                self._consumer.pause(tp)

    def assigned(self, assigned) -> None:
        """After a rebalance: a partition given back to this worker while its requests are in hand
        stays paused (a new assignment is not), so its request in progress is not fetched again."""
        self._pause([tp for tp in assigned if tp in self._tasks])

    async def _drain(self, tp: TopicPartition) -> None:
        queue = self._queues[tp]
        try:
            while queue:
                record = queue.popleft()
                try:
                    async with self._slots:
                        if self._closing:
                            # Taken before the stop, its slot came during the grace: not started (it
                            # would be cut at the grace's end), left uncommitted for the next owner.
                            return
                        await self._worker.handle(record.value, tp, record.offset)
                except Exception as exc:  # noqa: BLE001 - the request, not the worker, fails
                    # One that would fail every time (a value PostgreSQL refuses, a bug) is set aside on
                    # the dead-letter topic; one whose dependency is gone or refuses writes for now
                    # (PostgreSQL restarting or read-only) is taken again later, from its offset, as is
                    # any while the dead-letter topic fails.
                    if not _of_the_request(exc) or not await self._set_aside(record, tp, exc):
                        logger.warning("crawl request %s@%s could not be handled (%r); retried in %g s", tp,
                                       record.offset, exc, RETRY_SECONDS)
                        await asyncio.sleep(RETRY_SECONDS)
                        self._seek(tp, record.offset)
                        return
                try:
                    await self._consumer.commit({tp: record.offset + 1})
                except (CommitFailedError, KafkaError) as exc:
                    # Mostly: the partition moved to another worker meanwhile, which sees the requests
                    # again. Otherwise the requests not yet handled are fetched again from the next offset.
                    logger.warning("commit of %s@%s failed: %s", tp, record.offset, exc)
                    self._seek(tp, record.offset + 1)
                    return
        finally:
            del self._tasks[tp], self._queues[tp]
            if tp in self._consumer.assignment():
                self._consumer.resume(tp)

    async def _set_aside(self, record, tp: TopicPartition, exc: Exception) -> bool:
        logger.error("crawl request %s@%s could not be handled; dead-lettered", tp, record.offset, exc_info=exc)
        try:
            await self._worker.dead_letter(record.value or b"", f"{type(exc).__name__}: {exc}"[:500], tp,
                                           record.offset)
        except Exception:  # noqa: BLE001 - Kafka unreachable: the request is retried instead
            logger.exception("crawl request %s@%s not dead-lettered", tp, record.offset)
            return False
        return True

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        with contextlib.suppress(IllegalStateError):      # unless revoked meanwhile
            self._consumer.seek(tp, offset)

    async def close(self, grace: float) -> None:
        """Waits up to `grace` seconds for the jobs in progress, then cancels them (each saves its progress
        and is left uncommitted, so the partition's next owner resumes it)."""
        self._closing = True
        for queue in self._queues.values():
            queue.clear()          # no request starts during the grace period; each is fetched again
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Assignments(ConsumerRebalanceListener):
    """Logs which partitions this worker crawls (scale-out is visible in the logs)."""

    def __init__(self, work: _PartitionWork) -> None:
        self._work = work

    async def on_partitions_revoked(self, revoked) -> None:
        logger.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        logger.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        self._work.assigned(assigned)


if __name__ == "__main__":
    run_service("crawler", main, ScraperSettings)
