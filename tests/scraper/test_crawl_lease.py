"""A crawl runs only while its worker can keep the job's lease: renewal that fails for a bug, a lease
taken over while PostgreSQL cannot say why, or PostgreSQL away past the lease stop the crawl (logged),
so a job is never crawled by two workers; a short blip is retried within the lease. Real crawl workers
(PostgreSQL, Kafka) against a local site whose pages take seconds."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.errors import is_transient
from services.scraper import jobs
from tests.conftest import make_key
from tests.scraper.test_crawl import HeldChain
from tests.scraper.test_crawl_cancel import _fetched, _job, worker_for  # noqa: F401 - worker_for is a fixture
from tests.scraper.test_fetch_safety import Site

pytestmark = pytest.mark.integration

LEASE = 1.5      # renewed every half second


def _fetched_pages(site: Site, chain: HeldChain) -> list[int]:
    return [n for n in range(1, chain.length + 1) if site.hits[f"/held/{n}.html"]]


@pytest.mark.timeout(90)
async def test_a_renewal_that_fails_for_a_bug_stops_the_crawl_and_fails_the_job(
        worker_for, search, admin, pg, monkeypatch, caplog):
    key = await make_key(search, admin, "lease-bug", faq=[], docs=[])
    chain = HeldChain(12)

    async def broken(*args, **kwargs):
        raise RuntimeError("renewal is broken")

    monkeypatch.setattr(jobs, "renew", broken)
    caplog.set_level(logging.ERROR, logger="services.scraper.worker")
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        try:
            progress = await asyncio.wait_for(worker_for(scraper_job_lease_seconds=LEASE).run_job(request), 15)
        finally:
            chain.release.set()
    assert progress is not None
    assert _fetched_pages(site, chain)[-1] <= 2
    status = await jobs.get_job(pg, request.job_id)
    assert status.state == "failed" and "lease" in status.error and "renewal is broken" in status.error, status
    assert "renewal is broken" in caplog.text
    assert await pg.fetchval("SELECT claimed_by FROM crawl_jobs WHERE id = $1", request.job_id) is None


@pytest.mark.timeout(90)
async def test_a_lease_taken_over_stops_the_crawl_even_when_the_job_state_cannot_be_read(
        worker_for, search, admin, pg, monkeypatch, caplog):
    key = await make_key(search, admin, "lease-lost", faq=[], docs=[])
    chain = HeldChain(12)

    async def unreachable(*args, **kwargs):
        raise ConnectionRefusedError("PostgreSQL is restarting")

    caplog.set_level(logging.WARNING, logger="services.scraper.worker")
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        running = asyncio.ensure_future(worker_for(scraper_job_lease_seconds=LEASE).run_job(request))
        try:
            await _fetched(site, "/held/1.html")
            monkeypatch.setattr(jobs, "job_state", unreachable)
            await pg.execute("UPDATE crawl_jobs SET claimed_by = 'another-worker', lease_until = now() + interval"
                             " '1 minute' WHERE id = $1", request.job_id)
            assert await asyncio.wait_for(running, 10) is None      # the job is the other worker's now
        finally:
            chain.release.set()
            running.cancel()
    assert _fetched_pages(site, chain)[-1] <= 2
    assert "lease lost" in caplog.text
    row = await pg.fetchrow("SELECT state, claimed_by FROM crawl_jobs WHERE id = $1", request.job_id)
    assert (row["state"], row["claimed_by"]) == ("running", "another-worker")


async def _refused(*args, **kwargs):
    raise ConnectionRefusedError("PostgreSQL is restarting")


async def _hangs(*args, **kwargs):
    await asyncio.Event().wait()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("renew", [_refused, _hangs], ids=["refused", "hangs"])
async def test_postgresql_away_past_the_lease_stops_the_crawl_and_the_request_is_taken_again(
        worker_for, search, admin, pg, monkeypatch, caplog, renew):
    key = await make_key(search, admin, f"lease-away-{renew.__name__.strip('_')}", faq=[], docs=[])
    chain = HeldChain(12)
    real_renew = jobs.renew
    monkeypatch.setattr(jobs, "renew", renew)
    caplog.set_level(logging.ERROR, logger="services.scraper.worker")
    worker = worker_for(scraper_job_lease_seconds=LEASE)
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        try:
            running = asyncio.ensure_future(worker.run_job(request))
            await asyncio.wait([running], timeout=15)
            assert running.done(), "the crawl went on without its lease"
            # Failed as a dependency away does: the request is taken again from its offset, not dead-lettered.
            assert running.exception() is not None and is_transient(running.exception()), running.exception()
            assert _fetched_pages(site, chain)[-1] <= 2
            assert "lease" in caplog.text and "stopping the crawl" in caplog.text
            # Taken again once PostgreSQL answers: the job resumes and is crawled to its end.
            monkeypatch.setattr(jobs, "renew", real_renew)
            chain.release.set()
            progress = await asyncio.wait_for(worker.run_job(request), 60)
        finally:
            chain.release.set()
    assert progress is not None and progress.pages_failed == 0
    assert (await jobs.get_job(pg, request.job_id)).state == "done"


@pytest.mark.timeout(90)
async def test_a_short_blip_is_retried_within_the_lease_and_the_crawl_goes_on(
        worker_for, search, admin, pg, monkeypatch):
    key = await make_key(search, admin, "lease-blip", faq=[], docs=[])
    chain = HeldChain(4, hold=1.0)
    real_renew = jobs.renew
    calls: list[tuple[float, bool]] = []

    async def blip(*args, **kwargs):
        failing = 1 <= len(calls) <= 3
        calls.append((asyncio.get_running_loop().time(), failing))
        if failing:
            raise ConnectionRefusedError("PostgreSQL is restarting")
        return await real_renew(*args, **kwargs)

    monkeypatch.setattr(jobs, "renew", blip)
    async with Site(chain.routes()) as site:
        request = await _job(pg, key.id, site.base + "/held/1.html", max_depth=chain.length)
        progress = await asyncio.wait_for(worker_for(scraper_job_lease_seconds=LEASE).run_job(request), 60)
    assert progress is not None and progress.pages_fetched == chain.length
    assert (await jobs.get_job(pg, request.job_id)).state == "done"
    # Each failed renewal was tried again well before the next beat, and the lease was renewed in time.
    assert len(calls) >= 5 and [failing for _, failing in calls[:5]] == [False, True, True, True, False]
    gaps = [b - a for (a, _), (b, _) in zip(calls[1:5], calls[2:5])]
    assert all(gap < LEASE / 3 for gap in gaps), gaps
