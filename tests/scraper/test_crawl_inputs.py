"""Crawl inputs that once crashed a crawl, hung it, widened its scope or lost pages: catastrophic
patterns, other ports of the same host, sitemaps over the page size limit, an unreadable robots.txt,
pages removed since the last crawl that nothing links to any more, odd charsets and corrupt gzip.
Each crawl runs through a real crawl worker (PostgreSQL, Kafka) against small sites on 127.0.0.1."""

from __future__ import annotations

import gzip
import itertools
import logging

import pytest
from aiohttp import web

from services.common.errors import InvalidArgument, PermissionDenied
from services.common.kafka import EventProducer
from services.common.pb.parley.v1 import events_pb2
from services.common.redis_client import create_redis
from services.scraper import jobs
from services.scraper.crawler import SITEMAP_MAX_BYTES
from services.scraper.addresses import check_host
from services.scraper.encodings import decode_document
from services.scraper.fetching import FetchFailed, new_fetcher
from services.scraper.urls import site_of
from services.scraper.page_fetch import PageCache, fetch_page, site_hosts
from services.scraper.patterns import MAX_PATTERN_CHARS, compile_patterns
from services.scraper.worker import CrawlWorker
from services.search.keys import create_key
from tests.conftest import RUN_ID
from tests.scraper.test_fetch_safety import LOCAL, Site

pytestmark = pytest.mark.integration

_keys = itertools.count()
ROBOTS = lambda: web.Response(text="User-agent: *\nAllow: /\n")   # noqa: E731


def page(title: str, *links: str, extra: str = "") -> web.Response:
    body = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return web.Response(content_type="text/html", text=(
        f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1>"
        f"<p>{title} explains how the product handles {title.lower()} for every customer account.</p>"
        f"<p>Support answers questions about {title.lower()} within one working day.</p>{extra}"
        f"<nav>{body}</nav></main></body></html>"))


@pytest.fixture
async def crawl(stack, pg, settings):
    """Runs one crawl request through a crawl worker: the job's final status."""
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-crawl-inputs")
    await producer.start()
    workers = []

    async def run(key_id: str, seeds: list[str], sitemap: str = "", max_pages: int = 50, max_depth: int = 3,
                  include=(), exclude=(), worker_settings=None) -> jobs.JobStatus:
        spec = jobs.validate(key_id, seeds, sitemap, max_pages, max_depth, list(include), list(exclude))
        await jobs.create_job(pg, spec)
        worker = CrawlWorker(worker_settings or settings, pg, producer)
        workers.append(worker)
        await worker.run_job(events_pb2.CrawlRequested(
            job_id=spec.job_id, product_key_id=key_id, seed_urls=spec.seed_urls, sitemap_url=spec.sitemap_url,
            max_pages=spec.max_pages, max_depth=spec.max_depth, include=spec.include, exclude=spec.exclude))
        return await jobs.get_job(pg, spec.job_id)

    yield run
    for worker in workers:
        await worker.close()
    await producer.stop()


async def new_key(pg, website: str = "") -> str:
    key, _ = await create_key(pg, name="crawl inputs", key_id=f"t-{RUN_ID}-inputs-{next(_keys)}", website=website)
    return key.id


async def known_urls(pg, key_id: str) -> set[str]:
    return {r["url"] for r in await pg.fetch("SELECT url FROM crawled_pages WHERE product_key_id = $1", key_id)}


@pytest.mark.timeout(60)
async def test_a_catastrophic_pattern_times_out_instead_of_hanging_the_crawl(crawl, pg, caplog):
    caplog.set_level(logging.WARNING, logger="services.scraper.patterns")
    slow_path = "/" + "a" * 40 + "!"
    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", slow_path, "/billing.html"),
                     slow_path: lambda: page("Slow"), "/billing.html": lambda: page("Billing")}) as site:
        # (a|aa)+$ backtracks exponentially on a run of a's not followed by the end: with `re` the
        # crawl never returned. A search that times out counts as not matching: the page is not excluded.
        status = await crawl(await new_key(pg), [site.base + "/"], exclude=[r"(a|aa)+$"])
    assert status.state == "done", status.error
    assert site.hits[slow_path] == 1 and site.hits["/billing.html"] == 1
    assert status.progress.pages_fetched == 3
    timeouts = [r for r in caplog.records if "(a|aa)+$" in r.getMessage()]
    assert len(timeouts) == 1        # logged once, however many URLs it timed out on


@pytest.mark.parametrize("pattern, words", [
    ("([", "not a regular expression"),
    ("x" * (MAX_PATTERN_CHARS + 1), "the limit is"),
    ("((a{100}){100}){100}", "repeats more than"),
    ("(?:a{1000}){1000}", "repeats more than"),
])
def test_patterns_that_cannot_or_should_not_be_compiled_are_refused_at_request_time(pattern, words):
    with pytest.raises(InvalidArgument) as info:
        jobs.validate("k", ["http://x.example/"], "", 0, 0, [], [pattern])
    assert words in info.value.message
    assert compile_patterns("include", [r"^https://x\.example/help/", r"\d{4}/[a-z]{2,64}"])


async def test_the_scope_is_host_and_port(crawl, pg, settings):
    async with Site({"/robots.txt": ROBOTS}) as other, Site({"/robots.txt": ROBOTS}) as site:
        site._routes.update({
            "/": lambda: page("Home", other.base + "/linked.html", "/moved.html", "/kept.html"),
            "/moved.html": lambda: web.Response(status=301, headers={"Location": other.base + "/landed.html"}),
            "/kept.html": lambda: page("Kept"),
            # robots.txt and the sitemap index name sitemaps on the other port of the same host.
            "/robots.txt": lambda: web.Response(text=f"User-agent: *\nAllow: /\nSitemap: {other.base}/map.xml\n"),
        })
        other._routes.update({p: (lambda p=p: page(p)) for p in ("/linked.html", "/landed.html", "/listed.html")})
        other._routes["/map.xml"] = lambda: web.Response(content_type="application/xml", text=(
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{other.base}/listed.html</loc>'
            "</url></urlset>"))
        status = await crawl(await new_key(pg), [site.base + "/"])
        assert status.state == "done", status.error
        assert sum(other.hits.values()) == 0, other.hits     # neither its pages, its sitemap nor a redirect to it
        assert site.hits["/kept.html"] == 1
        assert status.progress.pages_skipped == 1                      # the redirect off the site, not followed

        # Fetch for a key whose website is the first site reads nothing on the other port.
        assert site_of("http://127.0.0.1:80/a") == site_of("http://127.0.0.1/b") == "127.0.0.1"
        assert site_of("https://X.example:443/") == "x.example" != site_of("http://x.example:8080/")
        redis = create_redis(settings.redis_url)
        try:
            async with new_fetcher(settings) as fetcher:
                with pytest.raises(PermissionDenied):
                    await fetch_page(fetcher, PageCache(redis), other.base + "/linked.html", 1, site_hosts(site.base + "/"))
                with pytest.raises(PermissionDenied):   # nor through a redirect
                    await fetch_page(fetcher, PageCache(redis), site.base + "/moved.html", 1, site_hosts(site.base + "/"))
        finally:
            await redis.aclose()
        assert sum(other.hits.values()) == 0


async def test_a_recrawl_asks_again_for_known_pages_nothing_links_to_any_more(crawl, pg):
    links = ["/a.html", "/b.html"]
    gone: set[str] = set()

    def maybe(path):
        return lambda: web.Response(status=404, text="gone") if path in gone else page(path.strip("/.html").title())

    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", *links),
                     "/a.html": maybe("/a.html"), "/b.html": maybe("/b.html")}) as site:
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"])
        assert first.state == "done" and first.progress.pages_fetched == 3, first
        assert site.base + "/b.html" in await known_urls(pg, key)

        links.remove("/b.html")     # the page is removed, and the link to it with it
        gone.add("/b.html")
        stopped = await crawl(key, [site.base + "/"], max_pages=2)
        assert site.hits["/b.html"] == 1      # a crawl that stopped at max_pages did not reach everything
        assert stopped.progress.pages_removed == 0

        again = await crawl(key, [site.base + "/"])
        assert again.state == "done", again.error
        assert site.hits["/b.html"] == 2      # asked again though nothing links to it
        assert again.progress.pages_removed == 1 and again.progress.chunks_deleted >= 1
        assert site.base + "/b.html" not in await known_urls(pg, key)
        assert site.base + "/a.html" in await known_urls(pg, key)


async def test_a_sitemap_over_the_page_size_limit_is_read_and_an_unreadable_one_counts_as_failed(crawl, pg, settings):
    small = settings.model_copy(update={"scraper_max_page_bytes": 50_000})
    filler = "".join(f"<url><loc>http://127.0.0.1:1/filler/{i:06d}/{'x' * 60}</loc></url>" for i in range(3000))

    def sitemap(base):
        return lambda: web.Response(content_type="application/xml", text=(
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{filler}'
            f"<url><loc>{base}/last.html</loc></url></urlset>"))

    async with Site({"/robots.txt": ROBOTS, "/last.html": lambda: page("Last")}) as site:
        site._routes["/sitemap.xml"] = sitemap(site.base)
        site._routes["/sitemap.xml.gz"] = lambda: web.Response(
            body=gzip.compress(sitemap(site.base)().body), content_type="application/gzip")
        site._routes["/broken.xml"] = lambda: web.Response(status=503, text="down")
        assert len(sitemap(site.base)().body) > 5 * small.scraper_max_page_bytes
        assert SITEMAP_MAX_BYTES == 50 * 1024 * 1024
        key = await new_key(pg)
        status = await crawl(key, [], sitemap=site.base + "/sitemap.xml", worker_settings=small)
        assert status.state == "done", status.error
        assert site.hits["/last.html"] == 1, status      # the URL after 3000 others was not cut off
        assert status.progress.pages_failed == 0
        status = await crawl(await new_key(pg), [], sitemap=site.base + "/sitemap.xml.gz", worker_settings=small)
        assert site.hits["/last.html"] == 2, status
        status = await crawl(await new_key(pg), [], sitemap=site.base + "/broken.xml", worker_settings=small)
        assert status.state == "done" and status.progress.pages_failed == 1, status


async def test_an_unreadable_robots_txt_is_said_in_the_status(crawl, pg, caplog):
    caplog.set_level(logging.WARNING)
    async with Site({"/robots.txt": lambda: web.Response(status=503, text="down"),
                     "/": lambda: page("Home")}) as down, \
            Site({"/robots.txt": lambda: web.Response(status=404, text="none"), "/": lambda: page("Home")}) as absent:
        status = await crawl(await new_key(pg), [down.base + "/"])
        assert down.hits["/"] == 0                                  # 5xx: nothing fetched (RFC 9309)
        assert status.state == "done" and status.progress.pages_robots_skipped == 1
        assert "robots.txt" in status.error and "503" in status.error and down.base in status.error, status.error
        assert any("robots.txt" in r.getMessage() and "503" in r.getMessage() for r in caplog.records)
        status = await crawl(await new_key(pg), [absent.base + "/"])
        assert absent.hits["/"] == 1 and status.progress.pages_fetched == 1   # 4xx: no rules
        assert status.error == ""


@pytest.mark.parametrize("charset", ["rot13", "base64", "undefined", "zlib", "idna", "punycode", "utf\x00"])
def test_a_charset_that_is_no_text_encoding_does_not_fail_decoding(charset):
    assert decode_document("<p>café</p>".encode(), f"text/html; charset={charset}") == "<p>café</p>"


async def test_odd_charsets_and_corrupt_gzip_are_no_crash(crawl, pg, settings):
    def rot13():
        resp = page("Rot")
        resp.headers["Content-Type"] = "text/html; charset=rot13"
        return resp

    corrupt = lambda: web.Response(body=b"\x1f\x8b\x08\x00garbage-not-deflate", content_type="text/html",  # noqa: E731
                                   headers={"Content-Encoding": "gzip"})
    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", "/rot.html", "/corrupt.html"),
                     "/rot.html": rot13, "/corrupt.html": corrupt}) as site:
        status = await crawl(await new_key(pg), [site.base + "/"])
        assert status.state == "done", status.error
        assert status.progress.pages_fetched == 2 and status.progress.pages_failed == 1, status   # Home and Rot; the corrupt one
        async with new_fetcher(settings) as fetcher:
            with pytest.raises(FetchFailed):
                await fetcher.get(site.base + "/corrupt.html")


async def test_a_host_name_that_cannot_be_resolved_is_an_invalid_argument():
    for host in ("a" * 70 + ".example", "a..b.example"):
        with pytest.raises(InvalidArgument):
            await check_host(LOCAL, f"http://{host}/")
    with pytest.raises(InvalidArgument):
        jobs.validate("k", ["http://x.example/" + "p" * jobs.MAX_URL_CHARS], "", 0, 0, [], [])
    # Hosts Fetch and a key's website refuse: shorthands of IPv4 addresses a resolver takes (8.8.8.8 and
    # 127.0.0.1; a crawl of "http://127.1:PORT/" stored its pages under that name), a false "xn--" label.
    for url in ("http://134744072/", "http://0x08080808/", "http://127.1:8080/", "http://1.2.3/", "http://xn--zz.example/"):
        with pytest.raises(InvalidArgument):
            jobs.validate("k", [url], "", 0, 0, [], [])
        with pytest.raises(InvalidArgument):
            jobs.validate("k", [], url + "sitemap.xml", 0, 0, [], [])


async def test_a_page_past_the_extraction_time_limit_is_skipped_and_the_others_indexed(crawl, pg, settings):
    quick = settings.model_copy(update={"scraper_extract_seconds": 0.5})
    spanning = "<table>" + "<tr><td colspan=100>x" * 90_000 + "</table>"     # 1.9 MB, seconds of layout
    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", "/slow.html", "/a.html"),
                     "/slow.html": lambda: web.Response(content_type="text/html", text=spanning),
                     "/a.html": lambda: page("Shipping")}) as site:
        key = await new_key(pg)
        status = await crawl(key, [site.base + "/"], worker_settings=quick)
        assert status.state == "done", status.error
        assert status.progress.pages_fetched == 2 and status.progress.pages_skipped == 1, status
        assert {site.base + "/a.html", site.base + "/slow.html"} <= await known_urls(pg, key)


async def test_a_page_emptied_since_the_last_crawl_takes_its_chunks_with_it(crawl, pg):
    emptied = []

    def shipping():
        if emptied:   # now a script's shell: navigation and nothing to read
            return web.Response(content_type="text/html", text=(
                '<html><body><nav><a href="/">Home</a></nav><div id="app"></div></body></html>'))
        return page("Shipping")

    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", "/a.html"), "/a.html": shipping}) as site:
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"])
        assert first.state == "done" and first.progress.pages_fetched == 2, first
        emptied.append(True)
        again = await crawl(key, [site.base + "/"])
        assert again.state == "done", again.error
        assert again.progress.pages_removed == 1 and again.progress.chunks_deleted >= 1, again
        row = await pg.fetchrow("SELECT content_hash, chunk_count FROM crawled_pages WHERE product_key_id = $1"
                                " AND url = $2", key, site.base + "/a.html")
        assert row["content_hash"] is None and row["chunk_count"] == 0     # its removal handed to the indexer


async def test_control_characters_and_escapes_of_a_page_are_stored_without_them(crawl, pg):
    title = "Returns \x1b[31mpolicy\x1b[0m\x07\u202e"
    html = (f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>Returns are free "
            "within 30 days \x1b]8;;http://evil.example\x07of delivery\x08 for every order.</p></main></body></html>")
    async with Site({"/robots.txt": ROBOTS,
                     "/returns.html": lambda: web.Response(content_type="text/html", text=html)}) as site:
        key = await new_key(pg)
        status = await crawl(key, [site.base + "/returns.html"])
        assert status.state == "done" and status.progress.pages_failed == 0, status
        assert status.progress.pages_fetched == 1, status
        stored = await pg.fetchval("SELECT title FROM crawled_pages WHERE product_key_id = $1", key)
        assert stored.split() == ["Returns", "policy"]
        again = await crawl(key, [site.base + "/returns.html"])
        assert again.progress.pages_unchanged == 1 and again.progress.pages_failed == 0, again


async def test_a_page_fetched_with_the_admin_token_is_not_served_from_the_cache_to_a_key(settings):
    """The admin's Fetch follows a redirect off a key's website; the key's Fetch of the same URL must
    not be served what the admin's read there."""
    async with Site({"/robots.txt": ROBOTS}) as other, Site({"/robots.txt": ROBOTS}) as site:
        site._routes["/moved.html"] = lambda: web.Response(status=301, headers={"Location": other.base + "/x.html"})
        other._routes["/x.html"] = lambda: page("Elsewhere")
        redis = create_redis(settings.redis_url)
        try:
            async with new_fetcher(settings) as fetcher:
                admins = await fetch_page(fetcher, PageCache(redis), site.base + "/moved.html", 60)
                assert admins.title == "Elsewhere" and not admins.cached
                with pytest.raises(PermissionDenied):
                    await fetch_page(fetcher, PageCache(redis), site.base + "/moved.html", 60, site_hosts(site.base + "/"))
                assert (await fetch_page(fetcher, PageCache(redis), site.base + "/moved.html", 60)).cached
        finally:
            await redis.aclose()


async def test_a_canonical_link_every_page_gives_to_the_home_page_hides_no_page(crawl, pg):
    """A theme that writes the home page's URL as every page's canonical link (a common slip): each
    page is indexed as itself. A canonical link that names the same page (another query) still merges."""
    def with_canonical(title: str, href: str):
        return lambda: web.Response(content_type="text/html", text=page(title).text.replace(
            "<head>", f'<head><link rel="canonical" href="{href}">'))

    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home", "/a.html", "/c.html", "/b.html?ref=nav"),
                     "/a.html": with_canonical("Shipping", "/"), "/c.html": with_canonical("Warranty", "/"),
                     "/b.html": with_canonical("Returns", "/b.html")}) as site:
        key = await new_key(pg)
        status = await crawl(key, [site.base + "/"])
        assert status.state == "done", status.error
        documents = {r["url"]: r["document"] for r in await pg.fetch(
            "SELECT url, document FROM crawled_pages WHERE product_key_id = $1", key)}
        assert documents[site.base + "/a.html"] == site.base + "/a.html"
        assert documents[site.base + "/c.html"] == site.base + "/c.html"
        assert documents[site.base + "/b.html?ref=nav"] == site.base + "/b.html"
        assert status.progress.pages_fetched == 4, status


async def test_pages_met_while_no_extracting_process_can_start_are_read_again_by_the_next_crawl(
        crawl, pg, monkeypatch, tmp_path):
    """A page skipped for want of an extracting process was recorded as a page past the extraction limits:
    the next crawl asked it conditionally, got 304, and never read it again."""
    from services.scraper import isolation

    async with Site({"/robots.txt": ROBOTS, "/": lambda: page("Home")}) as site:
        key_id = await new_key(pg)
        monkeypatch.setattr(isolation.sys, "executable", str(tmp_path / "missing"))
        status = await crawl(key_id, [site.base + "/"])
        assert status.state == "done", status.error
        assert status.progress.pages_skipped == 1 and status.progress.pages_fetched == 0
        assert await known_urls(pg, key_id) == set()
        monkeypatch.undo()
        status = await crawl(key_id, [site.base + "/"])
        assert status.progress.pages_fetched == 1, status.progress
        assert await known_urls(pg, key_id) == {site.base + "/"}
