"""Fetching defects found by reading: IPv6 forms that embed a private IPv4 address, an unreachable
robots.txt, robots.txt after a redirect, and what a refusal tells the caller."""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections import Counter

import pytest
from aiohttp import web

from services.scraper.addresses import AddressPolicy, BlockedAddress, denied_reason, parse_networks
from services.scraper.fetching import Fetcher, FetchFailed
from bench.harness import free_port

LOCAL = AddressPolicy(parse_networks("127.0.0.1/32"))


@pytest.mark.parametrize("address", [
    "2002:0a00:0001::1",                         # 6to4 of 10.0.0.1
    "2002:c0a8:0101::1",                         # 6to4 of 192.168.1.1
    "2002:7f00:0001::",                          # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",                         # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",      # Teredo, client 10.0.0.1
    "2001:0000:0a00:0001::1",                    # Teredo, server 10.0.0.1
    "64:ff9b::a00:1",                            # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",                        # NAT64 of 169.254.169.254
    "::ffff:192.168.0.1", "::ffff:169.254.169.254",
])
def test_ipv6_forms_embedding_a_non_public_ipv4_are_refused(address):
    ip = ipaddress.ip_address(address)
    assert denied_reason(ip)
    with pytest.raises(BlockedAddress) as info:
        AddressPolicy().check("evil.example", address)
    assert address not in info.value.message and "10.0.0.1" not in info.value.message


def test_a_6to4_address_of_a_public_ipv4_passes():
    assert AddressPolicy().check("h", "2002:0808:0808::1")


class Site:
    """A small origin on 127.0.0.1 whose routes a test sets (a route's function may be a coroutine)."""

    def __init__(self, routes: dict[str, web.StreamResponse | type]) -> None:
        self.hits: Counter[str] = Counter()
        self._routes = routes
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        make = self._routes.get(request.path)
        if make is None:
            return web.Response(status=404, text="no")
        made = make()
        return await made if inspect.isawaitable(made) else made

    async def __aenter__(self) -> Site:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


def _fetcher() -> Fetcher:
    return Fetcher(user_agent="ParleyBot/test", policy=LOCAL, host_delay=0, timeout=3)


async def test_an_unreachable_robots_txt_disallows():
    """RFC 9309 2.3.1.4: a robots.txt that cannot be reached means complete disallow."""
    async with _fetcher() as f:
        assert not await f.allowed(f"http://127.0.0.1:{free_port()}/page.html")   # connection refused


@pytest.mark.parametrize("status, allowed", [(500, False), (503, False), (404, True), (403, True)])
async def test_robots_txt_status_decides_as_rfc_9309_says(status, allowed):
    async with Site({"/robots.txt": lambda: web.Response(status=status, text="x")}) as site, _fetcher() as f:
        assert await f.allowed(site.base + "/page.html") is allowed


async def test_robots_txt_is_checked_again_after_a_redirect():
    robots = "User-agent: *\nDisallow: /private/\n"
    async with Site({
        "/robots.txt": lambda: web.Response(text="User-agent: *\nAllow: /\n"),
    }) as other, Site({
        "/robots.txt": lambda: web.Response(text=robots),
        "/go": lambda: web.Response(status=302, headers={"Location": "/private/secret.html"}),
        "/private/secret.html": lambda: web.Response(text="secret", content_type="text/html"),
    }) as site, _fetcher() as f:
        site._routes["/elsewhere"] = lambda: web.Response(status=302, headers={"Location": other.base + "/fine.html"})
        other._routes["/fine.html"] = lambda: web.Response(text="<p>fine</p>", content_type="text/html")
        other._routes["/to-private"] = lambda: web.Response(status=302, headers={"Location": site.base + "/private/secret.html"})
        assert await f.allowed(site.base + "/go")
        with pytest.raises(FetchFailed) as info:
            await f.get(site.base + "/go", obey_robots=True)
        assert info.value.kind == "robots"
        with pytest.raises(FetchFailed):       # to another host whose robots.txt disallows the target
            await f.get(other.base + "/to-private", obey_robots=True)
        assert site.hits["/private/secret.html"] == 0
        assert (await f.get(site.base + "/elsewhere", obey_robots=True)).status == 200
        with pytest.raises(FetchFailed) as info:   # a caller that names its hosts: no redirect off them
            await f.get(site.base + "/elsewhere", obey_robots=True, hosts=frozenset({"127.0.0.2"}))
        assert info.value.kind == "off_site"


async def test_a_refused_address_is_logged_not_told(caplog):
    async def resolve(host, port):
        return ["10.20.30.40"]

    caplog.set_level(logging.WARNING, logger="services.scraper.fetching")
    async with Fetcher(user_agent="ParleyBot/test", policy=AddressPolicy(), resolve=resolve) as f:
        with pytest.raises(BlockedAddress) as info:
            await f.get("http://intranet.example/")
    assert "10.20.30.40" not in info.value.message and "private" in info.value.message
    assert "10.20.30.40" in caplog.text
