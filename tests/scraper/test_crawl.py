"""Crawling the sample site through the real path: StartCrawl -> Kafka -> crawl worker -> pages topic ->
the search service's indexer -> PostgreSQL, progress over WatchCrawl, knowledge events, and incremental
re-crawls; Fetch with its cache."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from services.common.pb.parley.v1 import events_pb2, scraper_pb2, search_pb2
from services.settings import Settings
from services.search import indexer
from tests.conftest import rpc_error

pytestmark = pytest.mark.integration

SPECIAL_FAILURES = {"/error.html", "/loop/a", "/missing.html"}


async def indexed(settings: Settings, timeout: float = 90.0) -> None:
    """Waits until the indexer has taken every page the crawler handed over."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := await indexer.lag(settings)) > 0:
        assert asyncio.get_running_loop().time() < deadline, f"{left} pages still not indexed"
        await asyncio.sleep(0.3)


async def crawl(scraper, admin, settings: Settings, key_id: str, **request) -> tuple[scraper_pb2.CrawlStatus, list[scraper_pb2.CrawlStatus]]:
    """Starts a crawl, follows it with WatchCrawl to the end, then waits for its pages to be indexed:
    (final status, every update)."""
    reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(product_key_id=key_id, **request),
                                     metadata=admin, timeout=10)
    updates = [s async for s in scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id=reply.job_id),
                                                   metadata=admin, timeout=90)]
    await indexed(settings)
    return updates[-1], updates


async def page_chunks(pg, key_id: str) -> dict[str, list[tuple[int, str]]]:
    rows = await pg.fetch("SELECT id, document, content FROM knowledge_chunks WHERE product_key_id = $1 AND kind = 'page'"
                          " ORDER BY document, position", key_id)
    out: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        out.setdefault(r["document"], []).append((r["id"], r["content"]))
    return out


async def version(pg, key_id: str) -> int:
    return await pg.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key_id)


async def knowledge_events(settings, key_id: str, want: int, timeout: float = 20.0) -> list[events_pb2.KnowledgeUpdated]:
    consumer = AIOKafkaConsumer(settings.topic("knowledge_updated"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[events_pb2.KnowledgeUpdated] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < want and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    event = events_pb2.KnowledgeUpdated.FromString(r.value)
                    if event.product_key_id == key_id:
                        found.append(event)
    finally:
        await consumer.stop()
    return found


@pytest.fixture(scope="module")
async def first_crawl(scraper, admin, site_key, sample_site, settings):
    sample_site.reset()
    status, updates = await crawl(scraper, admin, settings, site_key.id, seed_urls=[sample_site.base_url + "/"],
                                  sitemap_url=sample_site.base_url + "/sitemap.xml", max_pages=200, max_depth=3)
    return status, updates, dict(sample_site.hits), sample_site.max_in_flight


async def test_crawl_indexes_the_site_politely(first_crawl, pg, site_key, sample_site, settings, search):
    status, updates, hits, max_in_flight = first_crawl
    assert status.state == "done", status.error
    assert len(updates) >= 2 and updates[0].state in ("queued", "running")
    assert status.pages_seen >= 40
    assert status.pages_fetched >= 32                       # 26 help pages, 5 blog pages, index, about, ...
    assert status.pages_robots_skipped == 1                 # /private/internal.html
    assert status.pages_failed == len(SPECIAL_FAILURES)     # 500, redirect loop, 404
    assert status.pages_skipped == 4                        # noindex, the PDF, the 5 MB page, and
    # /to-metadata: a redirect off the site (to the metadata address), not followed
    assert status.chunks_written >= status.pages_fetched
    assert hits.get("/private/internal.html", 0) == 0       # robots.txt obeyed: never requested
    assert hits["/sitemaps/help.xml.gz"] == 1               # the nested, gzipped sitemap was read
    assert settings.scraper_user_agent in sample_site.user_agents
    assert 1 < max_in_flight <= settings.scraper_host_concurrency   # per-host concurrency, with 8 pages in flight

    chunks = await page_chunks(pg, site_key.id)
    everything = "\n".join(c for doc in chunks.values() for _, c in doc)
    assert sample_site.base_url + "/help/reset-password.html" in chunks
    assert "The reset link we email you is valid for 30 minutes." in everything
    assert "Bluebird" not in everything                     # noindex honoured
    assert "ORCHID" not in everything                       # disallowed page never read
    assert "forever and ever" not in everything             # the 5 MB page is over the size limit
    assert "Staff" not in everything and "Copyright" not in everything   # boilerplate left out
    assert "Version 7.2 adds block-level sync" in everything             # text/plain is indexed
    # The redirect (/old-pricing.html -> /help/plans.html) and the canonical link do not index a page twice.
    assert sample_site.base_url + "/old-pricing.html" not in chunks
    hashes = await pg.fetchval("SELECT count(*) - count(DISTINCT (document, content_hash)) FROM knowledge_chunks"
                               " WHERE product_key_id = $1", site_key.id)
    assert hashes == 0

    events = await knowledge_events(settings, site_key.id, status.pages_fetched)
    changed = [e for e in events if e.reason == "page_changed"]
    assert len(changed) == status.pages_fetched
    assert max(e.knowledge_version for e in changed) == await version(pg, site_key.id)

    plan = await search.Plan(search_pb2.PlanRequest(product_key=site_key.secret,
                                                    message="How long is the password reset link valid?"), timeout=10)
    assert any(p.url.endswith("/help/reset-password.html") for p in plan.passages)


async def test_a_crawl_is_reported_done_once_its_pages_are_indexed(scraper, admin, search, pg, sample_site):
    """A client that polls until `done` can ask about the site at once: every chunk the job handed
    over is in the key's knowledge when WatchCrawl ends, without waiting for the indexer's lag."""
    key = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Test indexed", id=f"t-indexed-{uuid.uuid4().hex[:6]}"), metadata=admin, timeout=10)
    reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
        product_key_id=key.key.id, seed_urls=[sample_site.base_url + "/"], max_pages=8, max_depth=1),
        metadata=admin, timeout=10)
    updates = [s async for s in scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id=reply.job_id),
                                                   metadata=admin, timeout=90)]
    final = updates[-1]
    stored = await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1 AND kind = 'page'",
                               key.key.id)
    assert final.state == "done" and not final.error, final
    assert final.chunks_written > 0 and stored == final.chunks_written


async def test_recrawl_of_an_unchanged_site_writes_nothing(first_crawl, scraper, admin, pg, site_key, sample_site,
                                                          settings):
    before_chunks = await page_chunks(pg, site_key.id)
    before_version = await version(pg, site_key.id)
    sample_site.statuses.clear()
    hits_before = dict(sample_site.hits)
    status, _ = await crawl(scraper, admin, settings, site_key.id, seed_urls=[sample_site.base_url + "/"],
                            sitemap_url=sample_site.base_url + "/sitemap.xml", max_pages=200, max_depth=3)
    assert status.state == "done"
    assert status.pages_fetched == 0 and status.chunks_written == 0 and status.chunks_deleted == 0
    assert status.pages_unchanged >= 36
    assert await version(pg, site_key.id) == before_version
    assert await page_chunks(pg, site_key.id) == before_chunks
    # Pages whose sitemap lastmod is older than our copy are not even requested; the others are asked
    # with a conditional GET and answer 304 (ETag, or Last-Modified alone for the text file).
    sitemap_pages = [p for p in hits_before if p.startswith(("/help/", "/blog/"))]
    assert len(sitemap_pages) == 31
    requested = {p for p in sitemap_pages if sample_site.hits[p] != hits_before[p]}
    assert requested == {"/help/plans.html"}                # only as the target of /old-pricing.html's redirect
    assert all(code == 304 for p, code in sample_site.statuses if p in requested), [
        s for s in sample_site.statuses if s[0] in requested]
    not_modified = {p for p, code in sample_site.statuses if code == 304}
    assert {"/", "/about.html", "/contact.html", "/noindex.html", "/big.html", "/files/brochure.pdf",
            "/release-notes.txt"} <= not_modified
    full = {p for p, code in sample_site.statuses if code == 200}
    assert full - {"/sitemap.xml", "/sitemaps/help.xml.gz", "/sitemaps/blog.xml"} == {
        "/robots.txt", "/slow.html"}                        # no validators
    assert ("/help/plans.html", 304) in sample_site.statuses   # also at the end of /old-pricing.html's redirect


async def test_recrawl_replaces_changed_pages_and_removes_gone_ones(first_crawl, scraper, admin, pg, site_key,
                                                                    sample_site, settings):
    base = sample_site.base_url
    before = await page_chunks(pg, site_key.id)
    changed = sample_site.read_page("/help/refunds.html").replace("within 14 days", "within 60 days")
    sample_site.set_page("/help/refunds.html", changed)
    sample_site.set_page("/help/trash.html", None)          # 410 Gone
    # Same words in a new ETag but identical text: a hash match, no write.
    sample_site.set_page("/help/invoices.html", sample_site.read_page("/help/invoices.html") + "<!-- rebuilt -->")
    try:
        status, _ = await crawl(scraper, admin, settings, site_key.id, seed_urls=[base + "/"],
                                sitemap_url=base + "/sitemap.xml", max_pages=200, max_depth=3)
    finally:
        sample_site.reset()
    assert status.state == "done"
    assert status.pages_fetched == 1 and status.pages_removed == 1
    assert status.chunks_deleted == len(before[base + "/help/refunds.html"]) + len(before[base + "/help/trash.html"])
    after = await page_chunks(pg, site_key.id)
    assert base + "/help/trash.html" not in after
    refunds = "\n".join(c for _, c in after[base + "/help/refunds.html"])
    assert "within 60 days" in refunds and "within 14 days" not in refunds
    for doc, chunks in before.items():                      # every other page kept its very rows
        if doc not in (base + "/help/refunds.html", base + "/help/trash.html"):
            assert after[doc] == chunks, doc
    events = await knowledge_events(settings, site_key.id, 1000, timeout=3)
    assert [e.url for e in events if e.reason == "page_removed"] == [base + "/help/trash.html"]


async def test_start_crawl_validates(scraper, admin, site_key, sample_site):
    bad = [
        (dict(product_key_id=site_key.id), grpc.StatusCode.INVALID_ARGUMENT, "seed_urls"),
        (dict(product_key_id=site_key.id, seed_urls=["ftp://x.example/"]), grpc.StatusCode.INVALID_ARGUMENT, "http"),
        (dict(product_key_id=site_key.id, seed_urls=["http://x.example/"], include=["(["]),
         grpc.StatusCode.INVALID_ARGUMENT, "regular expression"),
        (dict(product_key_id=site_key.id, seed_urls=["http://x.example/"], max_pages=-1),
         grpc.StatusCode.INVALID_ARGUMENT, "max_pages"),
        (dict(product_key_id="no-such-key", seed_urls=[sample_site.base_url + "/"]), grpc.StatusCode.NOT_FOUND, "no-such-key"),
        (dict(product_key_id=site_key.id, seed_urls=["http://10.1.2.3/"]), grpc.StatusCode.PERMISSION_DENIED, "private"),
        (dict(product_key_id=site_key.id, seed_urls=["http://169.254.169.254/latest/"]),
         grpc.StatusCode.PERMISSION_DENIED, "metadata"),
    ]
    for request, code, words in bad:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(**request), metadata=admin, timeout=10)
        assert rpc_error(exc).code() == code, request
        assert words in rpc_error(exc).details(), rpc_error(exc).details()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(product_key_id=site_key.id,
                                                               seed_urls=[sample_site.base_url + "/"]), timeout=10)
    assert rpc_error(exc).code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id="crawl-nope"), metadata=admin, timeout=10)
    assert rpc_error(exc).code() == grpc.StatusCode.NOT_FOUND


async def test_fetch_one_page_cached(scraper, sample_site, web_key, admin):
    url = sample_site.base_url + "/help/encryption.html"
    hits = sample_site.hits["/help/encryption.html"]
    first = await scraper.Fetch(scraper_pb2.FetchRequest(url=url, product_key=web_key.secret), timeout=10)
    second = await scraper.Fetch(scraper_pb2.FetchRequest(url=url, product_key=web_key.secret), timeout=10)
    assert (first.status, first.cached, second.cached) == (200, False, True)
    assert first.title.startswith("Encryption") and "AES-256" in first.text and "Copyright" not in first.text
    assert second.text == first.text and second.url == first.url == url
    assert sample_site.hits["/help/encryption.html"] == hits + 1

    redirected = await scraper.Fetch(scraper_pb2.FetchRequest(url=sample_site.base_url + "/old-pricing.html",
                                                              product_key=web_key.secret), timeout=10)
    assert redirected.url == sample_site.base_url + "/help/plans.html" and "49 euros per year" in redirected.text
    gone = await scraper.Fetch(scraper_pb2.FetchRequest(url=sample_site.base_url + "/missing.html"), metadata=admin,
                               timeout=10)
    assert gone.status == 404 and gone.text == ""
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # the admin token may fetch any host, but never an internal one
        await scraper.Fetch(scraper_pb2.FetchRequest(url="http://10.0.0.7/"), metadata=admin, timeout=10)
    assert rpc_error(exc).code() == grpc.StatusCode.PERMISSION_DENIED and "10.0.0.7 is" not in rpc_error(exc).details()
    for url, code in [
        ("http://10.0.0.7/", grpc.StatusCode.PERMISSION_DENIED),
        ("https://example.com/", grpc.StatusCode.PERMISSION_DENIED),   # not the key's website
        (sample_site.base_url + "/to-metadata", grpc.StatusCode.PERMISSION_DENIED),
        (sample_site.base_url + "/private/internal.html", grpc.StatusCode.PERMISSION_DENIED),
        (sample_site.base_url + "/noindex.html", grpc.StatusCode.PERMISSION_DENIED),
        (sample_site.base_url + "/files/brochure.pdf", grpc.StatusCode.INVALID_ARGUMENT),
        (sample_site.base_url + "/big.html", grpc.StatusCode.INVALID_ARGUMENT),
        (sample_site.base_url + "/loop/a", grpc.StatusCode.UNAVAILABLE),
        ("not a url", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await scraper.Fetch(scraper_pb2.FetchRequest(url=url, product_key=web_key.secret), timeout=10)
        assert rpc_error(exc).code() == code, (url, rpc_error(exc).details())


async def test_fetch_needs_a_product_key_and_reads_only_its_website(scraper, sample_site, site_key):
    url = sample_site.base_url + "/help/encryption.html"
    for request, code in [
        (scraper_pb2.FetchRequest(url=url), grpc.StatusCode.UNAUTHENTICATED),
        (scraper_pb2.FetchRequest(url=url, product_key="pk_guess"), grpc.StatusCode.UNAUTHENTICATED),
        (scraper_pb2.FetchRequest(url=url, product_key=site_key.secret), grpc.StatusCode.PERMISSION_DENIED),  # no website
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await scraper.Fetch(request, timeout=10)
        assert rpc_error(exc).code() == code, rpc_error(exc).details()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await scraper.Fetch(scraper_pb2.FetchRequest(url=url), metadata=(("x-parley-admin-token", "guess"),), timeout=10)
    assert rpc_error(exc).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_parley_ingest_shows_progress(first_crawl, test_env, site_key, sample_site):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "ingest", sample_site.base_url + "/blog/", "--key", site_key.id,
        "--max-depth", "1", env={**__import__("os").environ, **test_env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    text = (out + err).decode()
    assert proc.returncode == 0, text
    assert "done" in text and "unchanged" in text


async def test_an_undecodable_crawl_request_is_dead_lettered(services, settings):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topic("crawl_requests"), b"\xff\xfenot protobuf", key=b"junk")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(settings.topic("deadletter"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found = None
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while found is None and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    if (headers.get("source-topic") == settings.topic("crawl_requests")
                            and headers.get("source-offset") == str(meta.offset)):
                        found = (r.value, headers)
    finally:
        await consumer.stop()
    assert found is not None, "the undecodable request never reached the dead-letter topic"
    assert found[0] == b"\xff\xfenot protobuf" and found[1]["reason"]


async def test_a_job_interrupted_by_a_crashed_worker_is_finished_by_the_next(services, scraper, admin, search, sample_site):
    """The offset is committed only after the job's final progress: SIGKILL mid-job, and the request is
    delivered again to the worker that takes the partition over, which finishes the job."""
    from tests.conftest import make_key

    key = await make_key(search, admin, "crash", faq=[], docs=[])
    reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
        product_key_id=key.id, seed_urls=[sample_site.base_url + "/slow.html"], include=[r"/slow\.html$"]),
        metadata=admin, timeout=10)
    request = scraper_pb2.GetCrawlRequest(job_id=reply.job_id)
    try:
        for _ in range(600):
            status = await scraper.GetCrawl(request, metadata=admin, timeout=10)
            if status.state != "queued":
                break
            await asyncio.sleep(0.02)
        assert status.state == "running", status
        services.kill("crawler")                      # mid-job: the slow page takes a second
        after_kill = await scraper.GetCrawl(request, metadata=admin, timeout=10)
        assert after_kill.state == "running"
    finally:
        services.start(["crawler"])
    final = [s async for s in scraper.WatchCrawl(request, metadata=admin, timeout=90)][-1]
    assert final.state == "done", final
    assert final.pages_fetched == 1 and final.chunks_written >= 1


def _assigned(log_file) -> list[int] | None:
    """The partitions a crawl worker last logged as assigned."""
    last = None
    for line in log_file.read_text().splitlines():
        if '"partitions assigned: ' in line:
            last = json.loads(line)["event"].split(": ", 1)[1]
    return json.loads(last) if last is not None else None


async def test_more_workers_crawl_more_partitions_in_parallel(services, scraper, admin, search, sample_site, settings,
                                                              test_env, tmp_path):
    from aiokafka.partitioner import murmur2

    from services.launcher import Launcher
    from tests.conftest import RUN_ID, make_key

    from bench.harness import free_port

    second = Launcher(tmp_path, env={**test_env, "PARLEY_CRAWLER_METRICS_PORT": str(free_port())})
    second.start(["crawler"])
    try:
        partitions = settings.topic_partitions
        logs = [services.log_file("crawler"), second.log_file("crawler")]
        for _ in range(600):      # until the group has rebalanced over both workers
            assigned = [_assigned(f) if f.exists() else None for f in logs]
            if all(assigned) and sorted(assigned[0] + assigned[1]) == list(range(partitions)):
                break
            await asyncio.sleep(0.1)
        assert all(assigned), assigned
        # One key per partition (the message key is the product key id).
        suffixes: dict[int, str] = {}
        for i in range(200):
            p = (murmur2(f"t-{RUN_ID}-part{i}".encode()) & 0x7FFFFFFF) % partitions
            suffixes.setdefault(p, f"part{i}")
        jobs = []
        for suffix in suffixes.values():
            key = await make_key(search, admin, suffix, faq=[], docs=[])
            reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
                product_key_id=key.id, seed_urls=[sample_site.base_url + "/about.html"], include=[r"/about\.html$"]),
                metadata=admin, timeout=10)
            jobs.append(reply.job_id)
        for job in jobs:
            final = [s async for s in scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id=job), metadata=admin,
                                                         timeout=60)][-1]
            assert final.state == "done" and final.pages_fetched == 1, final
        ran = [{j for j in jobs if f"crawl job {j} started" in f.read_text()} for f in logs]
        assert ran[0] and ran[1] and ran[0] | ran[1] == set(jobs) and not ran[0] & ran[1], ran
    finally:
        second.stop()


class HeldChain:
    """Routes of a chain of pages /held/1.html -> ... -> /held/N.html, each answered once the test
    releases them or after `hold` seconds (under the crawler's fetch timeout in tests, 3 s)."""

    def __init__(self, length: int, hold: float = 2.5) -> None:
        self.length, self.hold = length, hold
        self.release = asyncio.Event()

    def _page(self, n: int):
        from tests.scraper.test_crawl_inputs import page

        async def respond():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold)
            return page(f"Held {n}", *([f"/held/{n + 1}.html"] if n < self.length else []))
        return respond

    def routes(self) -> dict:
        from tests.scraper.test_crawl_inputs import ROBOTS, page

        return {"/robots.txt": ROBOTS, "/quick.html": lambda: page("Quick"),
                **{f"/held/{n}.html": self._page(n) for n in range(1, self.length + 1)}}


async def _start(scraper, admin, key, url: str, max_depth: int = 0) -> scraper_pb2.GetCrawlRequest:
    reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(product_key_id=key.id, seed_urls=[url],
                                                                   max_depth=max_depth), metadata=admin, timeout=10)
    return scraper_pb2.GetCrawlRequest(job_id=reply.job_id)


async def _fetched(site, path: str) -> None:
    for _ in range(500):
        if site.hits[path]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the crawl never fetched {path}")


async def test_a_long_crawl_does_not_hold_up_a_crawl_on_another_partition(services, scraper, admin, search, settings):
    """One worker, two keys whose requests land on different partitions: the first key's crawl follows a
    chain of pages the test holds back; the second key's crawl, requested after it, is done while the
    first still runs."""
    from aiokafka.partitioner import murmur2

    from tests.conftest import RUN_ID, make_key
    from tests.scraper.test_fetch_safety import Site

    names: dict[int, str] = {}
    for i in range(200):
        names.setdefault((murmur2(f"t-{RUN_ID}-hold{i}".encode()) & 0x7FFFFFFF) % settings.topic_partitions,
                         f"hold{i}")
    long_name, short_name = list(names.values())[:2]
    long_key = await make_key(search, admin, long_name, faq=[], docs=[])
    short_key = await make_key(search, admin, short_name, faq=[], docs=[])
    chain = HeldChain(6)
    async with Site(chain.routes()) as site:
        try:
            long_job = await _start(scraper, admin, long_key, site.base + "/held/1.html", max_depth=chain.length)
            await _fetched(site, "/held/1.html")
            short_job = await _start(scraper, admin, short_key, site.base + "/quick.html")
            final = [s async for s in scraper.WatchCrawl(short_job, metadata=admin, timeout=12)][-1]
            assert final.state == "done" and final.pages_fetched == 1, final
            assert (await scraper.GetCrawl(long_job, metadata=admin, timeout=10)).state == "running"
        finally:
            chain.release.set()
        final = [s async for s in scraper.WatchCrawl(long_job, metadata=admin, timeout=60)][-1]
        assert final.state == "done" and final.pages_fetched == chain.length, final


@pytest.mark.timeout(180)
async def test_a_crawl_under_way_when_postgres_restarts_loses_no_page(services, scraper, admin, search):
    """PostgreSQL stopped for 5 s mid-crawl: the pages crawled meanwhile are recorded once it is back
    (their writes retried, not counted as failed pages), the lease is renewed again, the worker does not
    exit, and the job ends done with every page."""
    from tests.analytics.test_stream_faults import _restart_postgres
    from tests.conftest import make_key
    from tests.scraper.test_fetch_safety import Site

    key = await make_key(search, admin, "pgcrawl", faq=[], docs=[])
    crawler_pid = services.pid("crawler")
    chain = HeldChain(3, hold=1.5)
    async with Site(chain.routes()) as site:
        job = await _start(scraper, admin, key, site.base + "/held/1.html", max_depth=chain.length)
        await _fetched(site, "/held/1.html")
        await asyncio.to_thread(_restart_postgres, "stopped", 5.0)
        chain.release.set()
        status = None
        for _ in range(600):
            try:
                status = await scraper.GetCrawl(job, metadata=admin, timeout=10)
            except grpc.aio.AioRpcError as exc:    # the API waits for PostgreSQL too: a client retries
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            else:
                if status.state in ("done", "failed"):
                    break
            await asyncio.sleep(0.1)
    assert status is not None and status.state == "done" and status.pages_fetched == chain.length, status
    assert services.pid("crawler") == crawler_pid, "the crawl worker exited"


@pytest.mark.timeout(180)
async def test_a_crawl_while_the_indexer_is_down_is_done_with_a_note_and_indexed_once_it_is_back(
        services, scraper, admin, search, pg, sample_site, settings):
    """The search service's indexer killed: the crawl hands its pages over and is reported done once the
    indexer has made no progress for PARLEY_SCRAPER_INDEX_STALL_SECONDS, with an error that says so;
    nothing is lost: the indexer, started again, indexes the pages."""
    from tests.conftest import make_key

    key = await make_key(search, admin, "noindexer", faq=[], docs=[])
    services.kill("indexer")
    try:
        reply = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
            product_key_id=key.id, seed_urls=[sample_site.base_url + "/about.html"], include=[r"/about\.html$"]),
            metadata=admin, timeout=10)
        final = [s async for s in scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id=reply.job_id),
                                                     metadata=admin, timeout=120)][-1]
        assert final.state == "done" and final.pages_fetched == 1 and final.chunks_written >= 1, final
        assert "not indexed" in final.error, final.error
        assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id) == 0
    finally:
        services.start(["indexer"])
    await indexed(settings)
    stored = await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id)
    assert stored == final.chunks_written
