"""Fetch of a page whose site cannot be asked: a host that cannot be a DNS name is the caller's mistake
(INVALID_ARGUMENT, as StartCrawl says), a site that cannot be reached is UNAVAILABLE; only robots.txt's
own rules refuse (PERMISSION_DENIED). Before, an unreachable robots.txt, which disallows the site while it
lasts (RFC 9309), was reported as robots.txt disallowing the page."""

from __future__ import annotations

import uuid

import grpc
import pytest
from aiohttp import web

from bench.harness import free_port
from services.common.pb.parley.v1 import scraper_pb2
from tests.conftest import rpc_error
from tests.scraper.test_crawl_inputs import page
from tests.scraper.test_fetch_safety import Site

pytestmark = pytest.mark.integration


async def fetch_error(scraper, admin, url: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scraper.Fetch(scraper_pb2.FetchRequest(url=url), metadata=admin, timeout=15)
    return rpc_error(info)


@pytest.mark.parametrize("host, words", [
    ("a" * 32 + "{run}.example", "63"),
    ("exa\x00mple{run}.com", "no host name has"),
    ("help..{run}.example", "empty label"),
    # Written as an internationalized name's ASCII form, and none (an emoji's is none under IDNA 2008):
    # the HTTP client failed on decoding it, and Fetch answered INTERNAL.
    ("xn--zz.{run}.example", "internationalized"),
    ("xn--ls8h.{run}.example", "internationalized"),
    # Shorthands of IPv4 addresses that a resolver takes: 8.8.8.8, 127.0.0.1.
    ("134744072", "no IPv4 address"),
    ("127.1", "no IPv4 address"),
])
async def test_a_host_that_cannot_be_a_dns_name_is_an_invalid_argument(scraper, admin, host, words):
    # A host of this run: Fetch's answers are cached for a while.
    error = await fetch_error(scraper, admin, f"http://{host.format(run=uuid.uuid4().hex)}/")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert words in error.details() and "robots" not in error.details()


async def test_a_site_that_cannot_be_reached_is_unavailable(scraper, admin):
    for url in (f"http://no-such-host-{uuid.uuid4().hex}.invalid/", f"http://127.0.0.1:{free_port()}/"):
        error = await fetch_error(scraper, admin, url)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, (url, error.details())
        assert "could not be fetched" in error.details() and "robots" not in error.details()


async def test_only_robots_txt_rules_refuse_a_page(scraper, admin):
    async with Site({"/robots.txt": lambda: web.Response(status=500, text="down"),
                     "/open": lambda: page("Open")}) as site:
        error = await fetch_error(scraper, admin, site.base + "/open")   # robots.txt cannot be read
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert site.hits["/open"] == 0
    async with Site({"/robots.txt": lambda: web.Response(text="User-agent: *\nDisallow: /private\n"),
                     "/private": lambda: page("Private")}) as site:
        error = await fetch_error(scraper, admin, site.base + "/private")
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "robots.txt" in error.details()
        assert site.hits["/private"] == 0
