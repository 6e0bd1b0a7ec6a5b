"""ScraperService servicer: maps protobuf to crawl jobs and page fetches and back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import grpc
import redis.asyncio as redis

from services.common import db
from services.common.admin import ADMIN_HEADER, admin_token, check_admin
from services.common.errors import (RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, ParleyError,
                                    PermissionDenied, Unauthenticated, Unavailable)
from services.common.kafka import LazyProducer, new_event_id, now_timestamp
from services.common.pb.parley.v1 import events_pb2, scraper_pb2, scraper_pb2_grpc
from services.scraper.settings import ScraperSettings
from services.common.timestamps import to_timestamp
from services.scraper import jobs
from services.scraper.addresses import check_host
from services.scraper.fetching import Fetcher
from services.scraper.isolation import Extractor
from services.common.product_keys import KeyValidator
from services.scraper.page_fetch import PageCache, fetch_page, site_hosts

logger = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 0.25
# How long StartCrawl waits for the broker to acknowledge the crawl request: a producer whose broker
# is gone keeps the event for its request timeout (15 s), longer than a caller waits, and a call cut
# by its deadline would leave the job queued with nobody told.
QUEUE_TIMEOUT_SECONDS = 5.0
# How much of the caller's deadline a wait (the broker, PostgreSQL) leaves for the answer.
DEADLINE_MARGIN_SECONDS = 0.5


@dataclass
class ScraperDeps:
    """Connections of the scraper API; the pool is attached once PostgreSQL answers. Kafka and Redis
    are soft: without Kafka, StartCrawl answers UNAVAILABLE; without Redis, keys are checked in
    PostgreSQL and Fetch is not cached."""

    producer: LazyProducer
    redis: redis.Redis
    fetcher: Fetcher
    pages: PageCache
    extractor: Extractor | None = None    # None: pages extracted in this process
    pool: asyncpg.Pool | None = None
    keys: KeyValidator | None = None


def status_message(job: jobs.JobStatus) -> scraper_pb2.CrawlStatus:
    return scraper_pb2.CrawlStatus(
        job_id=job.job_id, product_key_id=job.product_key_id, state=job.state, error=job.error,
        started_at=to_timestamp(job.started_at), finished_at=to_timestamp(job.finished_at), **job.progress.as_dict(),
    )


# How long a job whose insert was not confirmed is tried to be marked failed (PostgreSQL away meanwhile).
UNQUEUED_MARK_SECONDS = 300.0


class ScraperServicer(scraper_pb2_grpc.ScraperServiceServicer):
    def __init__(self, settings: ScraperSettings, deps: ScraperDeps, draining: asyncio.Event | None = None) -> None:
        self._settings = settings
        self._deps = deps
        self._draining = draining or asyncio.Event()
        self._marking: set[asyncio.Task] = set()    # jobs whose insert was not confirmed, being failed

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self._deps.pool is not None, "the gate admits calls only once the pool exists"
        return self._deps.pool

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        check_admin(admin_token(context), self._settings.admin_token)

    @staticmethod
    def _within_deadline(context: grpc.aio.ServicerContext, seconds: float) -> float:
        """`seconds`, or less: what the caller's deadline leaves, less the answer's margin."""
        remaining = context.time_remaining()
        return seconds if remaining is None else min(seconds, max(0.1, remaining - DEADLINE_MARGIN_SECONDS))

    def _statement_seconds(self, context: grpc.aio.ServicerContext) -> float:
        return self._within_deadline(context, self._settings.scraper_statement_seconds)

    @contextlib.asynccontextmanager
    async def _postgres(self, context: grpc.aio.ServicerContext | None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for within the caller's deadline (None: no caller waits); a
        statement past its timeout (give each `timeout=self._statement_seconds(context)`) is UNAVAILABLE
        with a retry hint; db.connection closes its connection."""
        wait = self._settings.scraper_pool_acquire_seconds
        try:
            async with db.connection(self._pool, wait if context is None else self._within_deadline(context, wait)) as conn:
                yield conn
        except TimeoutError:
            raise Unavailable("PostgreSQL did not answer in time; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)}) from None

    async def _mark_not_queued(self, job_id: str, why: str = "Kafka unavailable") -> bool:
        """Fails a job whose request did not reach Kafka, so that it is never claimed, should the event
        reach the broker later (jobs.claim). Given its own time, not what the caller has left: a job
        left queued would stay so for good. False when PostgreSQL could not be told."""
        try:
            async with self._postgres(None) as conn:
                await jobs.save_progress(conn, job_id, jobs.Progress(), "failed", f"not queued: {why}",
                                         timeout=self._settings.scraper_statement_seconds)
        except Exception as exc:  # noqa: BLE001 - the caller's answer is UNAVAILABLE either way
            logger.error("crawl %s not queued, and not marked failed: %r", job_id, exc)
            return False
        return True

    async def _mark_unqueued_insert(self, job_id: str) -> None:
        """An insert whose answer never came may have committed (PostgreSQL frozen just after it, a lost
        network path): its job, whose request never went to Kafka, is failed once PostgreSQL answers
        again, tried for up to UNQUEUED_MARK_SECONDS (a job that was never written: nothing to mark)."""
        deadline = asyncio.get_running_loop().time() + UNQUEUED_MARK_SECONDS
        while not await self._mark_not_queued(job_id, "PostgreSQL did not confirm the job"):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(2.0)

    async def StartCrawl(self, request: scraper_pb2.StartCrawlRequest, context) -> scraper_pb2.StartCrawlResponse:
        self._admin(context)
        spec = jobs.validate(
            request.product_key_id, list(request.seed_urls), request.sitemap_url, request.max_pages,
            request.max_depth, list(request.include), list(request.exclude),
        )
        # The key first (no lookup for a key that does not exist), then each host once, all at once:
        # 100 seeds on one host were 100 lookups one after the other.
        async with self._postgres(context) as conn:
            await jobs.require_active_key(conn, spec.product_key_id, timeout=self._statement_seconds(context))
        by_host = {urlsplit(url).hostname: url for url in [*spec.seed_urls, spec.sitemap_url] if url}
        checked = await asyncio.gather(*(check_host(self._deps.fetcher.policy, url) for url in by_host.values()),
                                       return_exceptions=True)
        for refused in checked:
            if isinstance(refused, BaseException):
                raise refused
        try:
            async with self._postgres(context) as conn:
                await jobs.create_job(conn, spec, timeout=self._statement_seconds(context))
        except BaseException as exc:
            if not isinstance(exc, ParleyError) or isinstance(exc, Unavailable):
                task = asyncio.get_running_loop().create_task(self._mark_unqueued_insert(spec.job_id))
                self._marking.add(task)
                task.add_done_callback(self._marking.discard)
            raise
        event = events_pb2.CrawlRequested(
            event_id=new_event_id(), occurred_at=now_timestamp(), job_id=spec.job_id,
            product_key_id=spec.product_key_id, seed_urls=spec.seed_urls, sitemap_url=spec.sitemap_url,
            max_pages=spec.max_pages, max_depth=spec.max_depth, include=spec.include, exclude=spec.exclude,
        )
        try:
            await asyncio.wait_for(self._deps.producer.publish(
                self._settings.topic("crawl_requests"), spec.product_key_id, event, wait=True
            ), self._within_deadline(context, QUEUE_TIMEOUT_SECONDS))
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the job must not stay queued forever
            logger.warning("crawl %s not queued: %r", spec.job_id, exc)
            await asyncio.shield(self._mark_not_queued(spec.job_id))
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise Unavailable("the crawl could not be queued on Kafka; try again",
                              trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)}) from exc
        logger.info("crawl %s queued for %s", spec.job_id, spec.product_key_id)
        return scraper_pb2.StartCrawlResponse(job_id=spec.job_id)

    async def GetCrawl(self, request: scraper_pb2.GetCrawlRequest, context) -> scraper_pb2.CrawlStatus:
        self._admin(context)
        jobs.check_job_id(request.job_id)
        async with self._postgres(context) as conn:
            job = await jobs.get_job(conn, request.job_id, timeout=self._statement_seconds(context))
        return status_message(job)

    async def CancelCrawl(self, request: scraper_pb2.GetCrawlRequest, context) -> scraper_pb2.CrawlStatus:
        self._admin(context)
        jobs.check_job_id(request.job_id)
        async with self._postgres(context) as conn:
            job = await jobs.cancel(conn, request.job_id, timeout=self._statement_seconds(context))
        if job.state == "cancelled":
            logger.info("crawl job %s cancelled", job.job_id)
        return status_message(job)

    async def WatchCrawl(self, request: scraper_pb2.GetCrawlRequest, context):
        """Sends the status when it changes, until the job has ended (done, failed or cancelled), or
        the service drains: then UNAVAILABLE with a retry-after at once, to watch on another instance
        (the job goes on), instead of holding the shutdown for its whole grace."""
        self._admin(context)
        jobs.check_job_id(request.job_id)
        last = None
        while True:
            async with self._postgres(context) as conn:
                job = await jobs.get_job(conn, request.job_id, timeout=self._statement_seconds(context))
            message = status_message(job)
            if message != last:
                yield message
                last = message
            if job.finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draining.wait(), WATCH_POLL_SECONDS)
            if self._draining.is_set():
                raise Unavailable("the scraper is shutting down; watch the job on another instance",
                                  trailers={RETRY_AFTER_TRAILER: "1"})

    async def _fetch_hosts(self, request: scraper_pb2.FetchRequest, context) -> frozenset[str] | None:
        """The hosts the caller may fetch from: its key's website, or any (None) with the admin token."""
        if admin_token(context) is not None:
            self._admin(context)
            return None
        if not request.product_key.strip():
            raise Unauthenticated(f"send the product key in product_key (or the admin token in {ADMIN_HEADER})")
        assert self._deps.keys is not None, "the gate admits calls only once the validator exists"
        key = await self._deps.keys.validate(request.product_key)
        if not key.website:
            raise PermissionDenied(f"product key {key.id} has no website; Fetch reads only a key's website")
        return site_hosts(key.website)

    async def Fetch(self, request: scraper_pb2.FetchRequest, context) -> scraper_pb2.FetchResponse:
        hosts = await self._fetch_hosts(request, context)
        page = await fetch_page(self._deps.fetcher, self._deps.pages, request.url,
                                self._settings.scraper_fetch_cache_seconds, hosts, self._deps.extractor)
        return scraper_pb2.FetchResponse(url=page.url, title=page.title, text=page.text, cached=page.cached,
                                         status=page.status)
