"""Scenario "crawl": the bundled sample site crawled through the real path (StartCrawl -> Kafka -> crawl
worker -> PostgreSQL), a first crawl into a fresh key side by side with a re-crawl of the unchanged site,
repeated on fresh keys; pages per second, medians and the re-crawl/first-crawl ratio, chunk writes.

The slow page (a fixed sleep of the sample site) is excluded so that the figures measure the crawler;
per-host politeness is relaxed (no delay, 8 requests in flight) because the site is local."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from rich.table import Table

from bench.harness import console, started_services
from deploy.local.sample_site.server import SampleSite
from services.cli import _admin_md, create_key
from services.common import db
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc

NAME = "crawl"
REPEATS = 5
CRAWL_ENV = {
    "PARLEY_SCRAPER_ALLOW_NETWORKS": "127.0.0.1/32",
    "PARLEY_SCRAPER_HOST_DELAY_SECONDS": "0",
    "PARLEY_SCRAPER_HOST_CONCURRENCY": "8",
    "PARLEY_SCRAPER_JOB_CONCURRENCY": "8",
}


async def _crawl(stub, admin, key_id: str, site: SampleSite) -> dict:
    base = site.base_url
    requests_before, bytes_before = sum(site.hits.values()), site.bytes_sent
    start = time.perf_counter()
    reply = await stub.StartCrawl(scraper_pb2.StartCrawlRequest(
        product_key_id=key_id, seed_urls=[base + "/"], sitemap_url=base + "/sitemap.xml", max_pages=500,
        max_depth=5, exclude=[r"/slow\.html$"]), metadata=admin, timeout=10)
    while True:
        status = await stub.GetCrawl(scraper_pb2.GetCrawlRequest(job_id=reply.job_id), metadata=admin, timeout=10)
        if status.state in ("done", "failed"):
            break
        await asyncio.sleep(0.05)   # the sample site shares this process: polling must not starve it
    end_to_end = time.perf_counter() - start
    crawl = status.finished_at.ToDatetime() - status.started_at.ToDatetime()
    processed = (status.pages_fetched + status.pages_unchanged + status.pages_failed + status.pages_skipped
                 + status.pages_robots_skipped + status.pages_removed)
    return {
        "state": status.state, "crawl_s": crawl.total_seconds(), "end_to_end_s": end_to_end, "pages": processed,
        "pages_fetched": status.pages_fetched, "pages_unchanged": status.pages_unchanged,
        "chunks_written": status.chunks_written, "chunks_deleted": status.chunks_deleted,
        "http_requests": sum(site.hits.values()) - requests_before, "bytes_received": site.bytes_sent - bytes_before,
    }


async def run(seconds: float, concurrencies: list[int]) -> dict:
    site = SampleSite()
    await site.start()
    rounds: list[dict] = []
    try:
        async with started_services(CRAWL_ENV) as (settings, _key_id, _secret):
            pool = await db.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
            admin = _admin_md(settings)
            try:
                async with channel(settings.scraper_addr) as ch:
                    stub = scraper_pb2_grpc.ScraperServiceStub(ch)
                    for i in range(REPEATS):
                        key = (await create_key(settings, "Crawl bench", f"crawl-bench-{uuid.uuid4().hex[:8]}")).key.id
                        console.print(f"  round {i + 1}/{REPEATS}: first crawl and re-crawl into {key} ...")
                        first = await _crawl(stub, admin, key, site)
                        rows_before = await pool.fetchval(
                            "SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key)
                        version_before = await pool.fetchval(
                            "SELECT knowledge_version FROM product_keys WHERE id = $1", key)
                        again = await _crawl(stub, admin, key, site)
                        rows_after = await pool.fetchval(
                            "SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key)
                        version_after = await pool.fetchval(
                            "SELECT knowledge_version FROM product_keys WHERE id = $1", key)
                        again["chunk_rows_changed"] = rows_after - rows_before
                        again["versions_bumped"] = version_after - version_before
                        rounds.append({"first": first, "recrawl": again})
            finally:
                await pool.close()
    finally:
        await site.stop()

    def med(kind: str, field: str) -> float:
        return statistics.median(r[kind][field] for r in rounds)

    first_s, again_s = med("first", "crawl_s"), med("recrawl", "crawl_s")
    first_e2e, again_e2e = med("first", "end_to_end_s"), med("recrawl", "end_to_end_s")
    pages = med("first", "pages")
    summary = {
        "pages_per_crawl": pages,
        "first_crawl_s": first_s, "recrawl_s": again_s,
        "first_pages_per_s": pages / first_s if first_s else 0.0,
        "recrawl_pages_per_s": med("recrawl", "pages") / again_s if again_s else 0.0,
        "recrawl_speedup": first_s / again_s if again_s else 0.0,
        "first_end_to_end_s": first_e2e, "recrawl_end_to_end_s": again_e2e,
        "recrawl_speedup_end_to_end": first_e2e / again_e2e if again_e2e else 0.0,
        "first_chunks_written": med("first", "chunks_written"),
        "recrawl_chunks_written": max(r["recrawl"]["chunks_written"] for r in rounds),
        "recrawl_chunk_rows_changed": max(abs(r["recrawl"]["chunk_rows_changed"]) for r in rounds),
        "recrawl_versions_bumped": max(r["recrawl"]["versions_bumped"] for r in rounds),
        "first_http_requests": med("first", "http_requests"), "recrawl_http_requests": med("recrawl", "http_requests"),
        "first_bytes": med("first", "bytes_received"), "recrawl_bytes": med("recrawl", "bytes_received"),
    }
    table = Table("", "first crawl", "re-crawl (unchanged site)", "first / re-crawl",
                  title=f"Crawling the sample site ({pages:.0f} URLs, slow page excluded), medians of {REPEATS} "
                        "rounds on fresh keys")
    table.add_row("crawl time in the worker (s)", f"{first_s:.3f}", f"{again_s:.3f}", f"{summary['recrawl_speedup']:.1f}x")
    table.add_row("StartCrawl to done (s)", f"{first_e2e:.3f}", f"{again_e2e:.3f}",
                  f"{summary['recrawl_speedup_end_to_end']:.1f}x")
    table.add_row("pages per second", f"{summary['first_pages_per_s']:.0f}", f"{summary['recrawl_pages_per_s']:.0f}", "")
    table.add_row("new or changed / unchanged pages",
                  f"{med('first', 'pages_fetched'):.0f} / {med('first', 'pages_unchanged'):.0f}",
                  f"{med('recrawl', 'pages_fetched'):.0f} / {med('recrawl', 'pages_unchanged'):.0f}", "")
    table.add_row("HTTP requests / bytes served", f"{med('first', 'http_requests'):.0f} / {med('first', 'bytes_received'):,.0f}",
                  f"{med('recrawl', 'http_requests'):.0f} / {med('recrawl', 'bytes_received'):,.0f}",
                  f"{med('first', 'http_requests') / max(1, med('recrawl', 'http_requests')):.1f}x / "
                  f"{med('first', 'bytes_received') / max(1, med('recrawl', 'bytes_received')):.0f}x")
    table.add_row("chunks written", f"{summary['first_chunks_written']:.0f}",
                  f"{summary['recrawl_chunks_written']} (rows changed: {summary['recrawl_chunk_rows_changed']}, "
                  f"versions bumped: {summary['recrawl_versions_bumped']})", "")
    console.print(table)
    return {"scenario": NAME, "repeats": REPEATS, "rounds": rounds, "summary": summary}
