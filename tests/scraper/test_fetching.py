"""Safety and politeness of fetching, against the sample site on 127.0.0.1: address refusal at connect
time (also after DNS rebinding and on redirects), redirect limits, size and type limits, robots.txt."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from protego import Protego

from services.scraper.addresses import AddressPolicy, BlockedAddress, denied_reason, parse_networks
from services.scraper.encodings import decode_document
from services.scraper.fetching import Fetcher, FetchFailed, HostGate
from services.scraper.urls import normalize_url

LOCAL = AddressPolicy(parse_networks("127.0.0.1/32"))


def fetcher(policy: AddressPolicy = LOCAL, **kw) -> Fetcher:
    kw.setdefault("host_delay", 0)
    return Fetcher(user_agent="ParleyBot/test", policy=policy, **kw)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1", "0.0.0.0",
    "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "fd00:ec2::254", "fec0::1",
])
def test_non_public_addresses_are_refused(address):
    assert denied_reason(ipaddress.ip_address(address))
    with pytest.raises(BlockedAddress):
        AddressPolicy().check("h", address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert AddressPolicy().check("h", address)


def test_allow_list_lets_a_network_through():
    policy = AddressPolicy(parse_networks("127.0.0.0/8, 10.9.0.0/16"))
    policy.check("h", "127.0.0.2")
    policy.check("h", "10.9.1.1")
    with pytest.raises(BlockedAddress):
        policy.check("h", "10.8.1.1")


def test_normalize_url():
    assert normalize_url("HTTP://Example.COM:80/a?b=1#frag") == "http://example.com/a?b=1"
    assert normalize_url("../c", "https://x.example:8443/a/b") == "https://x.example:8443/c"
    assert normalize_url("javascript:alert(1)") == normalize_url("ftp://x/") == ""


@pytest.mark.parametrize("url, normal", [
    # Dot segments go in absolute URLs too (RFC 3986 5.2.4), also percent-encoded ones: robots.txt is
    # matched against the path the server is asked for.
    ("http://x/./secret", "http://x/secret"),
    ("http://x/a/x/../../secret", "http://x/secret"),
    ("http://x/a/%2e%2E/secret", "http://x/secret"),
    ("http://x/a/b/..", "http://x/a/"),
    ("http://x/..", "http://x/"),
    ("http://x/a//../b", "http://x/a/b"),
    # One spelling of escapes: unreserved characters decoded, hex upper-case, an IRI's letters escaped.
    ("http://x/%7Eann", "http://x/~ann"),
    ("http://x/caf%c3%a9", "http://x/caf%C3%A9"),
    ("http://x/café?q=crème brûlée", "http://x/caf%C3%A9?q=cr%C3%A8me%20br%C3%BBl%C3%A9e"),
    # Reserved characters keep their escapes; queries and trailing slashes are kept.
    ("http://x/a%2fb?q=%26&r=%3d", "http://x/a%2Fb?q=%26&r=%3D"),
    ("http://x/p/?utm_source=a&id=1", "http://x/p/?utm_source=a&id=1"),
    ("http://x/\ud800", ""),
])
def test_normalize_url_gives_one_spelling_of_a_url(url, normal):
    assert normalize_url(url) == normal
    assert normalize_url(normal) == normal


async def test_robots_txt_is_matched_against_the_url_as_requested():
    """A URL recorded in another spelling (by an older crawl) is matched as it is requested."""
    rules = Protego.parse("User-agent: *\nDisallow: /secret\n")
    async with fetcher() as f:
        f._robots["http://x"] = (float("inf"), rules, "")
        assert not await f.allowed("http://x/a/../secret")
        assert not await f.allowed("http://x/./secret")
        assert await f.allowed("http://x/a/secret")


async def test_loopback_is_refused_without_the_allow_list(sample_site):
    async with fetcher(AddressPolicy()) as f:
        with pytest.raises(BlockedAddress):
            await f.get(sample_site.base_url + "/")
        # A name is checked on the address it resolves to when connecting, not on its spelling.
        port = sample_site.base_url.rsplit(":", 1)[1]
        with pytest.raises(BlockedAddress):
            await f.get(f"http://localhost:{port}/")


async def test_dns_rebinding_is_checked_at_connect_time(sample_site):
    """The first answer is public (what a pre-check would see); the one used to connect is loopback."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    port = int(sample_site.base_url.rsplit(":", 1)[1])

    async def rebinding(host, _port):
        return next(answers)

    before = sample_site.hits["/about.html"]
    async with fetcher(AddressPolicy(), resolve=rebinding) as f:
        assert (await rebinding("shop.example", port)) == ["93.184.216.34"]   # the "pre-check"
        with pytest.raises(BlockedAddress):
            await f.get(f"http://shop.example:{port}/about.html")
    assert sample_site.hits["/about.html"] == before


async def test_a_resolved_allowed_address_is_what_gets_connected(sample_site):
    port = int(sample_site.base_url.rsplit(":", 1)[1])

    async def resolve(host, _port):
        return ["127.0.0.1"]

    async with fetcher(resolve=resolve) as f:
        r = await f.get(f"http://help.acme.example:{port}/about.html")
    assert r.status == 200 and b"founded in 2014" in r.body


async def test_redirect_to_metadata_address_is_refused(sample_site):
    async with fetcher() as f:
        with pytest.raises(BlockedAddress, match="169.254.169.254"):
            await f.get(sample_site.base_url + "/to-metadata")


async def test_redirects_are_followed_with_a_limit_and_loops_stop(sample_site):
    async with fetcher() as f:
        r = await f.get(sample_site.base_url + "/old-pricing.html")
        assert r.url == sample_site.base_url + "/help/plans.html" and r.status == 200
        assert r.redirects == [sample_site.base_url + "/old-pricing.html"]
        with pytest.raises(FetchFailed, match="redirect loop"):
            await f.get(sample_site.base_url + "/loop/a")
    async with fetcher(max_redirects=0) as f:
        with pytest.raises(FetchFailed, match="more than 0 redirects"):
            await f.get(sample_site.base_url + "/old-pricing.html")


async def test_size_limit_stops_reading_the_5mb_page(sample_site):
    async with fetcher(max_bytes=1_000_000) as f:
        with pytest.raises(FetchFailed) as exc:
            await f.get(sample_site.base_url + "/big.html")
    assert exc.value.kind == "too_large"


async def test_binary_is_not_read(sample_site):
    async with fetcher() as f:
        r = await f.get(sample_site.base_url + "/files/brochure.pdf")
    assert r.status == 200 and r.content_type == "application/pdf" and r.body == b""


@pytest.mark.parametrize(("body", "content_type", "text"), [
    ("<p>caf\u00e9 \u2014 ok</p>".encode(), "text/html", "<p>caf\u00e9 \u2014 ok</p>"),  # UTF-8, said nowhere
    ("<p>caf\u00e9 \u201cx\u201d</p>".encode("cp1252"), "text/html", "<p>caf\u00e9 \u201cx\u201d</p>"),  # not UTF-8
    (b"<meta charset='windows-1252'><p>\x93a\x94</p>", "text/html", "<meta charset='windows-1252'><p>\u201ca\u201d</p>"),
    (b"<meta charset=utf-8><p>\xe9</p>", "text/html; charset=ISO-8859-1", "<meta charset=utf-8><p>\u00e9</p>"),  # header first
    (b"\xef\xbb\xbf<p>\xc3\xa9</p>", "text/html; charset=latin1", "<p>\u00e9</p>"),  # a byte order mark first of all
    ("<p>\u00e9</p>".encode("utf-16"), "text/html", "<p>\u00e9</p>"),
    ("<meta charset=shift_jis><p>\u65e5\u672c</p>".encode("shift_jis"), "", "<meta charset=shift_jis><p>\u65e5\u672c</p>"),
    (b"<meta charset=no-such-thing><p>\xe9</p>", "text/html", "<meta charset=no-such-thing><p>\u00e9</p>"),
    (b"<meta charset=utf-8>caf\xe9", "text/plain", "<meta charset=utf-8>caf\u00e9"),  # no <meta> in plain text
    ("<p>\u00e9</p>".encode("utf-16-le"), "text/html; charset=utf-16", "<p>\u00e9</p>"),  # UTF-16 from the header
    (b"<meta charset=utf-16le><p>\xc3\xa9</p>", "text/html", "<meta charset=utf-16le><p>\u00e9</p>"),  # but not <meta>
])
def test_a_document_is_decoded_as_a_browser_would(body, content_type, text):
    assert decode_document(body, content_type) == text


async def test_a_legacy_encoded_page_is_extracted_without_replacement_characters(sample_site):
    from services.scraper.extract import extract_html

    async with fetcher() as f:
        r = await f.get(sample_site.base_url + "/legacy/warranty.html")
    page = extract_html(r.text, r.url)
    assert "\ufffd" not in page.text + page.title
    assert "The \u201cCaf\u00e9 Pro\u201d grinder is covered for 24 months \u2013 parts and labour." in page.text
    assert page.title == "Warranty \u2013 Caf\u00e9 Help"


async def test_slow_page_times_out(sample_site):
    async with fetcher(timeout=0.2) as f:
        with pytest.raises(FetchFailed, match="timed out"):
            await f.get(sample_site.base_url + "/slow.html")


async def test_a_page_trickled_a_byte_at_a_time_fails_at_the_request_deadline():
    """Each read comes well within the read timeout, so only a deadline on the whole request ends it."""
    from aiohttp import web

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        for _ in range(100):               # 10 s at most, then the server stops by itself
            await response.write(b"<p>")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/trickle.html", trickle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with fetcher(timeout=1.0, request_seconds=0.8) as f:
            started = time.monotonic()
            with pytest.raises(FetchFailed, match="took longer than 0.8 s"):
                await f.get(f"http://127.0.0.1:{port}/trickle.html")
            assert time.monotonic() - started < 3
    finally:
        await runner.cleanup()


async def test_robots_txt_and_user_agent(sample_site):
    async with fetcher() as f:
        assert await f.allowed(sample_site.base_url + "/help/plans.html")
        assert not await f.allowed(sample_site.base_url + "/private/internal.html")
        rules = await f.robots(sample_site.base_url + "/")
        assert list(rules.sitemaps) == [sample_site.base_url + "/sitemap.xml"]


async def test_conditional_get_answers_304(sample_site):
    async with fetcher() as f:
        first = await f.get(sample_site.base_url + "/help/refunds.html")
        again = await f.get(sample_site.base_url + "/help/refunds.html",
                            headers={"If-None-Match": first.headers["etag"]})
        text = await f.get(sample_site.base_url + "/release-notes.txt")
        assert "etag" not in text.headers
        text_again = await f.get(sample_site.base_url + "/release-notes.txt",
                                 headers={"If-Modified-Since": text.headers["last-modified"]})
    assert (first.status, again.status, text_again.status) == (200, 304, 304)


async def test_host_gate_bounds_concurrency_and_spaces_request_starts():
    gate = HostGate(concurrency=2, delay=0.02)
    inside, most, starts = 0, 0, []

    async def request():
        nonlocal inside, most
        async with gate:
            starts.append(time.monotonic())
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.1)
            inside -= 1

    await asyncio.gather(*(request() for _ in range(6)))
    assert most == 2
    starts.sort()
    # asyncio.sleep never wakes early, so the spacing is a guarantee, not a timing measurement.
    assert all(b - a >= 0.02 * 0.99 for a, b in zip(starts, starts[1:]))


async def test_fetchers_sharing_their_gates_take_turns_at_a_site(sample_site):
    """A worker's crawl jobs share one gate per site: two fetchers' requests to one site are spaced
    by its delay between them all, not each fetcher's own."""
    gates: dict = {}
    url = sample_site.base_url + "/"
    one, two = fetcher(host_delay=0.2, gates=gates), fetcher(host_delay=0.2, gates=gates)
    alone = fetcher(host_delay=0.2)
    try:
        assert one.gate(url) is two.gate(url) and alone.gate(url) is not one.gate(url)
        began = time.monotonic()
        await asyncio.gather(*(f.get(url) for f in (one, two, one, two)))
        # asyncio.sleep never wakes early: four starts spaced by 0.2 s take 0.6 s at least.
        assert time.monotonic() - began >= 3 * 0.2 * 0.99
    finally:
        for f in (one, two, alone):
            await f.aclose()


async def test_robots_crawl_delay_is_read(sample_site):
    from protego import Protego

    rules = Protego.parse("User-agent: *\nCrawl-delay: 3\nDisallow: /x\n")
    assert rules.crawl_delay("ParleyBot/test") == 3


async def test_ip_literals_are_checked_before_connecting():
    async with fetcher() as f:
        for url in ("http://[::1]:9/", "http://[::ffff:10.0.0.1]/", "http://169.254.169.254/latest/meta-data/",
                    "http://0.0.0.0:9/"):
            with pytest.raises(BlockedAddress):
                await f.get(url)
