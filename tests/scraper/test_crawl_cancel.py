"""Ending a crawl job before its site is through: CancelCrawl (the admin), and the time limit of a job
in one worker. Real crawl workers (PostgreSQL, Kafka) against a local site whose pages take seconds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import events_pb2, scraper_pb2
from services.scraper import jobs
from services.scraper.worker import CrawlWorker
from tests.conftest import make_key, rpc_error
from tests.scraper.test_crawl import HeldChain
from tests.scraper.test_fetch_safety import Site

pytestmark = pytest.mark.integration


@pytest.fixture
async def worker_for(stack, pg, settings):
    """`worker_for(**setting overrides)`: a crawl worker of this process, closed at the end."""
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-crawl-cancel")
    await producer.start()
    workers: list[CrawlWorker] = []

    def make(**overrides) -> CrawlWorker:
        workers.append(CrawlWorker(settings.model_copy(update=overrides), pg, producer))
        return workers[-1]

    yield make
    for worker in workers:
        await worker.close()
    await producer.stop()


async def _job(pg, key_id: str, seed: str, max_depth: int) -> events_pb2.CrawlRequested:
    spec = jobs.validate(key_id, [seed], "", 50, max_depth, [], [])
    await jobs.create_job(pg, spec)
    return events_pb2.CrawlRequested(job_id=spec.job_id, product_key_id=key_id, seed_urls=spec.seed_urls,
                                     max_pages=spec.max_pages, max_depth=spec.max_depth)


async def _fetched(site: Site, path: str) -> None:
    for _ in range(500):
        if site.hits[path]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the crawl never fetched {path}")


@pytest.mark.timeout(90)
async def test_a_cancelled_crawl_stops_fetching_and_frees_its_worker(worker_for, scraper, search, admin, pg):
    """A chain of twelve pages of 2.5 s each: cancelled after the first, the worker stops at its next
    lease renewal (every half second here), long before the chain's end."""
    key = await make_key(search, admin, "cancel", faq=[], docs=[])
    chain = HeldChain(12)
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        worker = worker_for(scraper_job_lease_seconds=1.5)
        running = asyncio.ensure_future(worker.run_job(request))
        try:
            await _fetched(site, "/held/1.html")
            status = await scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id=request.job_id), metadata=admin,
                                               timeout=10)
            assert status.state == "cancelled" and status.finished_at.seconds > 0, status
            assert await asyncio.wait_for(running, 20) is None       # the crawl stopped, not finished
        finally:
            chain.release.set()
            running.cancel()
        fetched = [n for n in range(1, chain.length + 1) if site.hits[f"/held/{n}.html"]]
        assert fetched[-1] <= 4, fetched
        row = await pg.fetchrow("SELECT state, claimed_by FROM crawl_jobs WHERE id = $1", request.job_id)
        assert row["state"] == "cancelled" and row["claimed_by"] is None
        # WatchCrawl ends at the cancel; a cancel again, or a replayed request, changes nothing.
        updates = [s async for s in scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id=request.job_id),
                                                       metadata=admin, timeout=10)]
        assert updates[-1].state == "cancelled"
        again = await scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id=request.job_id), metadata=admin,
                                          timeout=10)
        assert again.finished_at == status.finished_at
        assert await worker.run_job(request) is None
        assert site.hits["/held/1.html"] == 1


async def test_cancel_of_a_finished_job_leaves_it_and_bad_calls_are_refused(worker_for, scraper, search, admin, pg):
    key = await make_key(search, admin, "cancel-done", faq=[], docs=[])
    chain = HeldChain(1, hold=0)
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/quick.html", max_depth=0)
        await worker_for().run_job(request)
    done = await scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id=request.job_id), metadata=admin, timeout=10)
    assert done.state == "done" and done.pages_fetched == 1 and not done.error
    for job_id, metadata, code in [
        ("crawl-nope", admin, grpc.StatusCode.NOT_FOUND),
        ("", admin, grpc.StatusCode.INVALID_ARGUMENT),
        (request.job_id, (), grpc.StatusCode.UNAUTHENTICATED),
        (request.job_id, (("x-parley-admin-token", key.secret),), grpc.StatusCode.UNAUTHENTICATED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id=job_id), metadata=metadata, timeout=10)
        assert rpc_error(info).code() == code, (job_id, rpc_error(info).details())


@pytest.mark.timeout(90)
async def test_a_crawl_stops_at_its_time_limit_done_with_its_pages_so_far(worker_for, search, admin, pg):
    key = await make_key(search, admin, "time-limit", faq=[], docs=[])
    chain = HeldChain(12)
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        try:
            progress = await asyncio.wait_for(worker_for(scraper_job_max_seconds=4).run_job(request), 30)
        finally:
            chain.release.set()
    status = await jobs.get_job(pg, request.job_id)
    assert status.state == "done" and "time limit of 4 s" in status.error, status
    assert progress is not None and 1 <= status.progress.pages_fetched < chain.length
    assert not site.hits[f"/held/{chain.length}.html"]
    chunks = await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id)
    assert chunks >= 1   # its pages so far were indexed


async def test_a_watch_ends_unavailable_with_a_retry_hint_when_the_scraper_drains(
        services, search, admin, pg, test_env, tmp_path):
    """WatchCrawl of a job that is still queued never ends by itself: on SIGTERM the scraper ends it
    with UNAVAILABLE and a retry-after (watch on another instance) at once, instead of holding its
    shutdown for the whole grace and having gRPC cancel the stream."""
    from services.common.pb.parley.v1 import scraper_pb2_grpc
    from tests.conftest import stream_ended_by_sigterm

    key = await make_key(search, admin, "drain-watch", faq=[], docs=[])
    request = await _job(pg, key.id, "http://127.0.0.1:9/", max_depth=0)   # never on Kafka: stays queued
    error, ended = await stream_ended_by_sigterm(
        test_env, tmp_path, "scraper", lambda ch: scraper_pb2_grpc.ScraperServiceStub(ch).WatchCrawl(
            scraper_pb2.GetCrawlRequest(job_id=request.job_id), metadata=admin, timeout=60))
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "shutting down" in error.details()
    assert dict(error.trailing_metadata() or ()).get("retry-after"), error.trailing_metadata()
    assert ended < 10, f"the watch held the shutdown {ended:.1f} s"
