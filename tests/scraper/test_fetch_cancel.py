"""A fetch cancelled while it waits its turn at a site (the caller's deadline passed) gives its place back:
the scraper API keeps one Fetcher for its life, so a slot lost per cancelled Fetch would block the site."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from services.scraper.fetching import Fetcher, FetchFailed, HostGate
from tests.scraper.test_fetch_safety import LOCAL, Site


async def _enter_and_leave(gate: HostGate) -> None:
    async with gate:
        pass


async def test_a_gate_entry_cancelled_while_waiting_gives_its_slot_back():
    gate = HostGate(concurrency=2, delay=0)
    gate.hold(0.5)              # a Retry-After: both entries wait, one sleeping, the other for the lock
    waiting = [asyncio.create_task(_enter_and_leave(gate)) for _ in range(2)]
    await asyncio.sleep(0.1)
    assert not any(t.done() for t in waiting)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert all(t.cancelled() for t in waiting)
    # Both slots are free again: two more enter at once (after the hold) and leave the gate idle.
    await asyncio.wait_for(asyncio.gather(_enter_and_leave(gate), _enter_and_leave(gate)), 5)
    assert gate.idle()


def _fetcher(**kw) -> Fetcher:
    kw.setdefault("timeout", 3)
    return Fetcher(user_agent="ParleyBot/test", policy=LOCAL, host_concurrency=2, **kw)


async def test_cancelled_fetches_do_not_block_the_site_for_later_ones():
    async with Site({
        "/robots.txt": lambda: web.Response(text="User-agent: *\nAllow: /\n"),
        "/page.html": lambda: web.Response(text="<p>page</p>", content_type="text/html"),
    }) as site, _fetcher(host_delay=0.5) as f:
        url = site.base + "/page.html"
        assert await f.allowed(url)
        # Each start is half a second after the one before: the first request goes, the next two wait
        # their turn holding the site's two slots, and are cancelled there as a caller's deadline would.
        first = asyncio.create_task(f.get(url))
        waiting = [asyncio.create_task(f.get(url)) for _ in range(2)]
        await first
        await asyncio.sleep(0.1)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert site.hits["/page.html"] == 1
        later = await asyncio.wait_for(asyncio.gather(f.get(url), f.get(url)), 10)
        assert [r.status for r in later] == [200, 200]
        assert f.gate(url)._users == 0


async def test_a_fetch_waiting_for_its_turn_keeps_to_its_time_bound():
    """The API's fetcher: waiting for the site counts within request_seconds, so a Fetch never waits
    past it, whatever the site's hold."""
    async with Site({
        "/page.html": lambda: web.Response(text="<p>page</p>", content_type="text/html"),
    }) as site, _fetcher(host_delay=0, request_seconds=0.5) as f:
        url = site.base + "/page.html"
        f.gate(url).hold(10)
        started = time.monotonic()
        with pytest.raises(FetchFailed) as info:
            await asyncio.wait_for(f.get(url), 8)
        assert time.monotonic() - started < 3
        assert "0.5 s" in info.value.reason
        assert site.hits["/page.html"] == 0
        assert f.gate(url)._users == 0


async def test_a_crawl_fetcher_waits_its_turn_however_long():
    """A crawl's requests queue behind the site's Crawl-delay: the wait is bounded by the job's time limit,
    not each request's."""
    async with Site({
        "/page.html": lambda: web.Response(text="<p>page</p>", content_type="text/html"),
    }) as site, _fetcher(host_delay=0, request_seconds=0.3, deadline_covers_wait=False) as f:
        url = site.base + "/page.html"
        f.gate(url).hold(1.0)
        assert (await asyncio.wait_for(f.get(url), 8)).status == 200
