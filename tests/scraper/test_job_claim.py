"""One worker per crawl job: after a rebalance the new owner of a partition reads a request whose job
the previous owner is still crawling; it waits for that worker's lease instead of crawling too."""

from __future__ import annotations

import asyncio

from services.common.kafka import EventProducer
from services.scraper import jobs
from services.scraper.worker import CrawlWorker
from tests.conftest import make_key
from services.common.pb.parley.v1 import events_pb2


async def test_two_workers_given_the_same_job_crawl_it_once(services, settings, pg, search, admin, sample_site):
    key = await make_key(search, admin, "claim", faq=[], docs=[])
    spec = jobs.validate(key.id, [sample_site.base_url + "/blog/"], "", 20, 1, [], [])
    await jobs.create_job(pg, spec)
    request = events_pb2.CrawlRequested(job_id=spec.job_id, product_key_id=key.id, seed_urls=spec.seed_urls,
                                        max_pages=spec.max_pages, max_depth=spec.max_depth)
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-claim")
    await producer.start()
    try:
        first, second = CrawlWorker(settings, pg, producer), CrawlWorker(settings, pg, producer)
        before = sample_site.hits["/blog/"]
        results = await asyncio.wait_for(asyncio.gather(first.run_job(request), second.run_job(request)), 60)
    finally:
        await producer.stop()
    assert sample_site.hits["/blog/"] == before + 1          # fetched by one worker only
    assert sum(r is not None for r in results) == 1          # the other found the job done and skipped it
    status = await jobs.get_job(pg, spec.job_id)
    assert status.state == "done"
    assert await pg.fetchval("SELECT claimed_by FROM crawl_jobs WHERE id = $1", spec.job_id) is None


async def test_a_lease_is_taken_over_only_once_it_expired(pg, search, admin, sample_site):
    key = await make_key(search, admin, "lease", faq=[], docs=[])
    spec = jobs.validate(key.id, [sample_site.base_url + "/"], "", 1, 1, [], [])
    await jobs.create_job(pg, spec)
    assert await jobs.claim(pg, spec.job_id, "worker-a", 0.5) == "claimed"
    assert await jobs.claim(pg, spec.job_id, "worker-b", 0.5) == "busy"
    await asyncio.sleep(0.7)                                  # worker-a died: no renewal
    assert await jobs.claim(pg, spec.job_id, "worker-b", 5) == "claimed"
    assert not await jobs.renew(pg, spec.job_id, "worker-a", 5)   # a's late progress is not written
    assert not await jobs.save_progress(pg, spec.job_id, jobs.Progress(pages_seen=99), "done", owner="worker-a")
    assert await jobs.save_progress(pg, spec.job_id, jobs.Progress(pages_seen=1), "done", owner="worker-b")
    assert await jobs.claim(pg, spec.job_id, "worker-c", 5) == "finished"
    assert (await jobs.get_job(pg, spec.job_id)).progress.pages_seen == 1
