"""A large sitemap is read off the crawl worker's event loop (leases, Kafka heartbeats and the other jobs
run on it), and its URLs are not normalised past the crawl's page budget. A real crawl worker
(PostgreSQL, Kafka) against a local site serving a sitemap of 200,000 URLs (43 MB unzipped)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import threading

import pytest
from aiohttp import web

from services.scraper import crawler
from tests.scraper.test_crawl_inputs import ROBOTS, crawl, new_key, page  # noqa: F401 - crawl is a fixture
from tests.scraper.test_fetch_safety import Site

pytestmark = pytest.mark.integration

URLS = 200_000


@functools.cache
def _sitemap(base: str) -> bytes:
    entries = "".join(
        f"<url><loc>{base}/p/{i}.html?from=sitemap-of-the-help-centre-articles</loc>"
        f"<lastmod>2024-05-0{i % 9 + 1}T10:00:00+00:00</lastmod><changefreq>weekly</changefreq>"
        f"<priority>0.5</priority></url>" for i in range(URLS))
    return gzip.compress(("<?xml version='1.0' encoding='UTF-8'?><urlset xmlns="
                          f"'http://www.sitemaps.org/schemas/sitemap/0.9'>{entries}</urlset>").encode(), 1)


@pytest.mark.timeout(120)
async def test_a_large_sitemap_is_read_off_the_event_loop_and_only_up_to_the_page_budget(crawl, pg, monkeypatch):
    parsed_in: list[int] = []
    normalised = 0
    read_sitemap, normalize_url = crawler.read_sitemap, crawler.normalize_url

    def recording_read(data: bytes):
        parsed_in.append(threading.get_ident())
        return read_sitemap(data)

    def counting_normalize(url: str, base: str = "") -> str:
        nonlocal normalised
        normalised += 1
        return normalize_url(url, base)

    monkeypatch.setattr(crawler, "read_sitemap", recording_read)
    monkeypatch.setattr(crawler, "normalize_url", counting_normalize)
    routes = {"/robots.txt": ROBOTS, **{f"/p/{i}.html": functools.partial(page, f"Page {i}") for i in range(5)}}
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async with Site(routes) as site:
        body = _sitemap(site.base)
        site._routes["/sitemap.xml.gz"] = lambda: web.Response(body=body, content_type="application/gzip")
        ticker = asyncio.create_task(tick())
        try:
            status = await crawl(await new_key(pg), [], sitemap=site.base + "/sitemap.xml.gz", max_pages=5)
        finally:
            ticker.cancel()
    assert status.state == "done" and status.progress.pages_fetched == 5, status
    assert site.hits["/sitemap.xml.gz"] == 1
    assert parsed_in and threading.get_ident() not in parsed_in
    assert normalised < 1_000, normalised          # not one per URL of the sitemap
    # Reading it took seconds on the loop before; a generous bound for a loaded machine.
    assert max(gaps) < 1.0, max(gaps)
