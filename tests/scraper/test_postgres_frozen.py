"""The scraper API while PostgreSQL accepts connections and answers nothing (every one of its processes
stopped with SIGSTOP, as a hung host or a lost network path): its calls are UNAVAILABLE with a retry
hint within seconds, not held until their caller's deadline, and answer again once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import grpc
import pytest

from deploy.local import stack as local_stack
from services.common.pb.parley.v1 import scraper_pb2
from services.scraper import jobs
from services.search.keys import create_key
from tests.conftest import RUN_ID

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 10.0
# Well before the deadline: a pooled connection (2 s at most) and one statement (3 s at most).
ANSWERED_WITHIN_SECONDS = 6.0
FROZEN_AT_MOST_SECONDS = 15.0


def frozen_postgres():
    """PostgreSQL stopped for the block, and FROZEN_AT_MOST_SECONDS at most whatever the block does."""
    return local_stack.frozen("postgres", at_most=FROZEN_AT_MOST_SECONDS)


async def _timed(call) -> tuple[float, grpc.aio.AioRpcError | None]:
    started = time.monotonic()
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


async def _until_answered(call, within: float, done: grpc.StatusCode = grpc.StatusCode.OK) -> None:
    """`call` answers (OK, or `done`) within `within` seconds (the readiness gate may take a probe to
    open again)."""
    started = time.monotonic()
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == done:
                return
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - started > within:
                raise
        await asyncio.sleep(0.25)


async def _key(pg, name: str) -> str:
    """A key of its own, written to PostgreSQL directly: a service just past a freeze may not take calls yet."""
    key, _secret = await create_key(pg, name=name, key_id=f"t-{RUN_ID}-{name}-{uuid.uuid4().hex[:6]}")
    return key.id


@pytest.mark.timeout(120)
async def test_crawl_calls_are_unavailable_soon_while_postgres_is_frozen(scraper, admin, sample_site, pg):
    key_id = await _key(pg, "pgfrozen")
    spec = jobs.validate(key_id, [sample_site.base_url + "/"], "", 1, 1, [], [])
    await jobs.create_job(pg, spec)
    job = scraper_pb2.GetCrawlRequest(job_id=spec.job_id)
    start = scraper_pb2.StartCrawlRequest(product_key_id=key_id, seed_urls=[sample_site.base_url + "/"],
                                          max_pages=1, max_depth=1)

    async def get() -> None:
        await scraper.GetCrawl(job, metadata=admin, timeout=DEADLINE_SECONDS)

    async def start_crawl() -> None:
        reply = await scraper.StartCrawl(start, metadata=admin, timeout=DEADLINE_SECONDS)
        started.append(reply.job_id)

    async def cancel() -> None:
        await scraper.CancelCrawl(job, metadata=admin, timeout=DEADLINE_SECONDS)

    async def watch() -> None:
        async for _ in scraper.WatchCrawl(job, metadata=admin, timeout=DEADLINE_SECONDS):
            pass

    started: list[str] = []
    # The calls start together, as soon as PostgreSQL stops: each one meets it in the servicer, before
    # the readiness probe (every few seconds) could notice and refuse calls at the door.
    with frozen_postgres():
        outcomes = await asyncio.gather(_timed(get), _timed(start_crawl), _timed(cancel), _timed(watch))
    for name, (elapsed, error) in zip(("GetCrawl", "StartCrawl", "CancelCrawl", "WatchCrawl"), outcomes):
        assert error is not None, f"{name} answered while PostgreSQL was frozen"
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (name, error.code(), error.details(), elapsed)
        assert elapsed < ANSWERED_WITHIN_SECONDS, (name, elapsed)
        assert "retry-after" in dict(error.trailing_metadata() or ()), (name, error.trailing_metadata())

    await _until_answered(get, within=10.0)
    await _until_answered(start_crawl, within=5.0)
    # The cancel sent to the frozen server may have been carried out once it resumed: either is right.
    assert (await scraper.GetCrawl(job, metadata=admin, timeout=DEADLINE_SECONDS)).state in ("queued", "cancelled")
    assert (await scraper.CancelCrawl(job, metadata=admin, timeout=DEADLINE_SECONDS)).state == "cancelled"
    await scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id=started[-1]), metadata=admin,
                              timeout=DEADLINE_SECONDS)
    # A StartCrawl cut off by the freeze left no job queued behind it: every job of the key is the one
    # this test made, or the one the call after the freeze started (and cancelled).
    rows = await pg.fetch("SELECT id, state FROM crawl_jobs WHERE product_key_id = $1 AND id <> ALL($2::text[])",
                          key_id, [spec.job_id, *started])
    assert [r for r in rows if r["state"] == "queued"] == [], rows


@pytest.mark.timeout(60)
async def test_a_job_insert_postgres_reads_after_its_caller_gave_up_records_nothing(stack, pg, scraper, admin,
                                                                                     monkeypatch):
    """The insert of a StartCrawl whose wait ran out while PostgreSQL was frozen is carried out when it
    resumes (it reads what waits on the closed connection): without its deadline it recorded a queued
    job whose request never went to Kafka."""
    key_id = await _key(pg, "pgfrozeninsert")
    spec = jobs.validate(key_id, ["https://shop.example/"], "", 1, 1, [], [])
    conn = await asyncpg.connect(stack.postgres_dsn)
    # Once before: its statements are prepared, so the insert goes out whole (not a prepare first,
    # which the frozen server would hold back the insert behind), as on a pooled connection in use.
    await jobs.create_job(conn, jobs.validate(key_id, ["https://shop.example/"], "", 1, 1, [], []), timeout=5.0)
    checked = jobs.require_active_key

    async def checked_then_frozen(*args, **kwargs):
        answer = await checked(*args, **kwargs)
        freezing.enter_context(frozen_postgres())     # the insert comes next, to a stopped server
        return answer

    monkeypatch.setattr(jobs, "require_active_key", checked_then_frozen)
    with contextlib.ExitStack() as freezing:
        with pytest.raises(TimeoutError):
            await jobs.create_job(conn, spec, timeout=1.0)
        conn.terminate()
        await asyncio.sleep(1.0)                       # past the insert's deadline on PostgreSQL's clock too
    await asyncio.sleep(1.5)                           # resumed: the insert waiting on its socket is read
    assert await pg.fetchval("SELECT count(*) FROM crawl_jobs WHERE id = $1", spec.job_id) == 0
    await pg.execute("DELETE FROM crawl_jobs WHERE product_key_id = $1", key_id)
    # The scraper takes calls again before the next test (its readiness probe may have seen the freeze).
    await _until_answered(lambda: scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id=spec.job_id), metadata=admin,
                                                   timeout=DEADLINE_SECONDS), within=10.0, done=grpc.StatusCode.NOT_FOUND)


async def test_a_job_whose_insert_was_not_confirmed_is_failed_once_postgres_answers(stack, pg, monkeypatch):
    """The insert committed and its answer was lost (a TimeoutError to the caller): the job, whose
    request never went to Kafka, is failed in the background rather than left queued for good. While
    PostgreSQL does not answer, the marking is tried again."""
    from services.scraper.server import ScraperDeps, ScraperServicer
    from services.scraper.settings import ScraperSettings

    key_id = await _key(pg, "pgunconfirmed")
    spec = jobs.validate(key_id, ["https://shop.example/"], "", 1, 1, [], [])
    async with pg.acquire() as conn:
        await jobs.create_job(conn, spec, timeout=5.0)       # committed; its caller heard nothing
    servicer = ScraperServicer(ScraperSettings(), ScraperDeps(producer=None, redis=None, fetcher=None, pages=None,
                                                              pool=pg))
    saves = jobs.save_progress
    failures = 1

    async def away_once(*args, **kwargs):
        nonlocal failures
        if failures:
            failures -= 1
            raise TimeoutError                                # PostgreSQL did not answer the first time
        return await saves(*args, **kwargs)

    monkeypatch.setattr(jobs, "save_progress", away_once)
    await asyncio.wait_for(servicer._mark_unqueued_insert(spec.job_id), 30)
    row = await pg.fetchrow("SELECT state, error FROM crawl_jobs WHERE id = $1", spec.job_id)
    assert row["state"] == "failed" and "did not confirm" in row["error"], row
    await pg.execute("DELETE FROM crawl_jobs WHERE product_key_id = $1", key_id)
