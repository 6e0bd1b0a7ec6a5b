"""Fetch's page cache is a soft dependency: a Redis that accepts connections and never answers (a
frozen server) is asked once, not by every Fetch, and the pages are read from their site meanwhile."""

from __future__ import annotations

import asyncio

from services.common.redis_client import create_redis
from services.scraper.fetching import new_fetcher
from services.scraper.page_fetch import PageCache, fetch_page
from tests.scraper.test_crawl_inputs import ROBOTS, page
from tests.scraper.test_fetch_safety import Site


class FrozenRedis:
    """A TCP server that takes connections and commands and never replies; it keeps what it was sent."""

    def __init__(self) -> None:
        self.received = b""
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.append(writer)
        while data := await reader.read(65536):
            self.received += data

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc) -> None:
        for writer in self._held:
            writer.close()
        self._server.close()

    @property
    def connections(self) -> int:
        return len(self._held)


async def test_a_frozen_redis_is_asked_by_one_fetch_not_by_each(settings):
    frozen = FrozenRedis()
    async with Site({"/robots.txt": ROBOTS, "/a.html": lambda: page("Returns")}) as site, frozen as frozen_url:
        client = create_redis(frozen_url)
        cache = PageCache(client)
        try:
            async with new_fetcher(settings) as fetcher:
                pages = [await fetch_page(fetcher, cache, site.base + "/a.html", 60) for _ in range(5)]
        finally:
            await client.aclose()
    assert [p.title for p in pages] == ["Returns"] * 5 and not any(p.cached for p in pages)
    assert site.hits["/a.html"] == 5
    # The first Fetch waited for Redis (a command that times out closes its connection); the others,
    # within the second before the next try, neither asked nor wrote what they read. Without the gate:
    # a connection and a wait for each of five reads and five writes.
    assert frozen.connections == 1, frozen.received
    assert cache.health.down


async def test_a_failed_fetch_is_answered_from_the_cache_for_a_while(settings, stack):
    """A page that cannot be served (not HTML here; too large, past the extraction limits alike) is
    not asked of its origin and the shared extractor again by every Fetch: the same error comes from
    the cache, for a tenth of the page TTL."""
    import uuid

    import pytest
    from aiohttp import web

    from services.common.errors import InvalidArgument, Unavailable
    from services.scraper.page_fetch import cache_key
    from bench.harness import free_port

    pdf = lambda: web.Response(body=b"%PDF-1.7", content_type="application/pdf")  # noqa: E731
    client = create_redis(stack.redis_url)
    cache = PageCache(client)
    try:
        async with Site({"/robots.txt": ROBOTS, f"/{uuid.uuid4().hex}.pdf": pdf}) as site, \
                new_fetcher(settings) as fetcher:
            url = site.base + next(r for r in site._routes if r.endswith(".pdf"))
            for _ in range(3):
                with pytest.raises(InvalidArgument, match="not HTML or text"):
                    await fetch_page(fetcher, cache, url, 60)
            assert site.hits[url.removeprefix(site.base)] == 1
            assert 0 < await client.ttl(cache_key(url)) <= 6
            # An origin that cannot be reached (its robots.txt neither: nothing is fetched there) is
            # UNAVAILABLE, not a refusal, and not cached: it may be back soon. Its unreadable robots.txt
            # is kept by the fetcher for a while, so the next Fetches do not ask it again meanwhile.
            gone = f"http://127.0.0.1:{free_port()}/{uuid.uuid4().hex}.html"
            for _ in range(2):
                with pytest.raises(Unavailable, match="could not be fetched"):
                    await fetch_page(fetcher, cache, gone, 3600)
            assert await client.ttl(cache_key(gone)) == -2
    finally:
        await client.aclose()


async def test_a_fetch_that_failed_for_now_is_tried_again_at_the_next_call(settings, stack):
    """An origin too slow for the Fetch's time bound may answer a moment later: nothing is cached for it."""
    import uuid

    import pytest
    from aiohttp import web

    from services.common.errors import Unavailable

    async def slow():
        await asyncio.sleep(3)
        return web.Response(text="<html><body><p>Late.</p></body></html>", content_type="text/html")

    client = create_redis(stack.redis_url)
    cache = PageCache(client)
    path = f"/{uuid.uuid4().hex}.html"
    hurried = settings.model_copy(update={"scraper_request_seconds": 0.5})
    try:
        async with Site({"/robots.txt": ROBOTS, path: slow}) as site, new_fetcher(hurried) as fetcher:
            for _ in range(2):
                with pytest.raises(Unavailable):
                    await fetch_page(fetcher, cache, site.base + path, 600)
            assert site.hits[path] == 2
    finally:
        await client.aclose()


async def test_a_page_read_while_no_extracting_process_can_start_is_unavailable_and_not_cached(
        settings, stack, monkeypatch, tmp_path):
    """Fetch answered such a page INVALID_ARGUMENT "could not be read within the page limits" and kept that
    answer for every caller for a minute, though it said nothing of the page."""
    import uuid

    import pytest

    from services.common.errors import Unavailable
    from services.scraper import isolation
    from services.scraper.page_fetch import cache_key

    client = create_redis(stack.redis_url)
    cache = PageCache(client)
    path = f"/{uuid.uuid4().hex}.html"
    extractor = isolation.Extractor(seconds=60)
    try:
        async with Site({"/robots.txt": ROBOTS, path: lambda: page("Returns")}) as site, \
                new_fetcher(settings) as fetcher:
            monkeypatch.setattr(isolation.sys, "executable", str(tmp_path / "missing"))
            with pytest.raises(Unavailable, match="try again"):
                await fetch_page(fetcher, cache, site.base + path, 600, extractor=extractor)
            assert await client.ttl(cache_key(site.base + path)) == -2
            monkeypatch.undo()
            assert (await fetch_page(fetcher, cache, site.base + path, 600, extractor=extractor)).title == "Returns"
    finally:
        await extractor.close()
        await client.aclose()
