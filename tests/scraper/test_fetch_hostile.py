"""Origins that serve what they should not, or say it oddly: robots.txt of any type or size, IDN host
names, UTF-16 declared in the header, binary files labelled as text, 429 and 503 with Retry-After."""

from __future__ import annotations

import asyncio
import gzip
import time
from email.utils import formatdate

import httpx
import pytest
from aiohttp import web

from services.scraper.addresses import AddressPolicy, parse_networks
from services.scraper.fetching import Fetcher, retry_after_seconds
from services.scraper.urls import normalize_url, site_of
from tests.scraper.test_fetch_safety import Site

LOCAL = AddressPolicy(parse_networks("127.0.0.1/32"))
ROBOTS = "User-agent: *\nDisallow: /private/\n"


def _fetcher(**kw) -> Fetcher:
    kw.setdefault("host_delay", 0)
    kw.setdefault("timeout", 3)
    return Fetcher(user_agent="ParleyBot/test", policy=LOCAL, **kw)


class RawOrigin:
    """An origin on 127.0.0.1 answering every request with the same head and body (aiohttp would add a
    Content-Type)."""

    def __init__(self, head: str, body: bytes) -> None:
        self.response = (head.replace("\n", "\r\n") + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.base = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(self.response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawOrigin:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()


# robots.txt

@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream", "text/plain; charset=utf-8"])
async def test_robots_txt_is_obeyed_whatever_its_content_type(content_type):
    async with Site({"/robots.txt": lambda: web.Response(body=ROBOTS.encode(), headers={"Content-Type": content_type})}
                    ) as site, _fetcher() as f:
        assert not await f.allowed(site.base + "/private/a.html")
        assert await f.allowed(site.base + "/public/a.html")


async def test_robots_txt_without_a_content_type_is_obeyed():
    async with RawOrigin("HTTP/1.1 200 OK\n", ROBOTS.encode()) as origin, _fetcher() as f:
        assert not await f.allowed(origin.base + "/private/a.html")
        assert await f.allowed(origin.base + "/public/a.html")


async def test_a_robots_txt_over_500_kib_is_read_up_to_there():
    """RFC 9309 2.5: at least the first 500 KiB are parsed, whatever the page size limit. The line the
    limit cuts is dropped: cut after 'Disallow: /' it would disallow everything."""
    head = ROBOTS + "Disallow: /also-private/\n"
    cut_line = "Disallow: /deep/path/\n"
    padding = 500 * 1024 - len(head) - len("Disallow: /")
    body = head + "#" * (padding - 1) + "\n" + cut_line + "Disallow: /after-the-limit/\n" * 5000
    assert body.index(cut_line) + len("Disallow: /") == 500 * 1024
    async with Site({"/robots.txt": lambda: web.Response(text=body)}) as site, _fetcher(max_bytes=100_000) as f:
        assert await f.robots_problem(site.base + "/") == ""
        assert not await f.allowed(site.base + "/also-private/a.html")
        assert await f.allowed(site.base + "/public/a.html")
        assert await f.allowed(site.base + "/after-the-limit/a.html")
    assert site.hits["/robots.txt"] == 1


async def test_a_gzipped_robots_txt_over_500_kib_is_read_up_to_there():
    body = ROBOTS + "#\n" * 400_000 + "Disallow: /\n"
    data = gzip.compress(body.encode())
    async with Site({"/robots.txt": lambda: web.Response(body=data, headers={
            "Content-Type": "text/plain", "Content-Encoding": "gzip"})}) as site, _fetcher() as f:
        assert not await f.allowed(site.base + "/private/a.html")
        assert await f.allowed(site.base + "/public/a.html")


# IDN host names

def test_an_idn_host_is_given_its_ascii_form():
    assert normalize_url("http://B\u00fccher.example/a?b=1") == "http://xn--bcher-kva.example/a?b=1"
    assert normalize_url("https://xn--bcher-kva.example:8443/") == "https://xn--bcher-kva.example:8443/"
    assert normalize_url("/b", "http://b\u00fccher.example/a") == "http://xn--bcher-kva.example/b"
    assert normalize_url("http://b\u00fccher\u3002example/") == "http://xn--bcher-kva.example/"   # ideographic full stop
    assert site_of("http://b\u00fccher.example/") == site_of("https://xn--bcher-kva.example/") == "xn--bcher-kva.example"
    assert normalize_url("http://my_host.example/") == "http://my_host.example/"   # ASCII hosts as they were


@pytest.mark.parametrize("url", ["http://" + "\u00fc" * 64 + ".example/", "http://a\u200eb.example/",
                                 "http://xn--zz.example/", "http://www.XN--ls8h.la/"],
                         ids=["label over 63 bytes", "a disallowed code point", "a false ASCII form", "an emoji's"])
def test_an_idn_host_that_cannot_be_encoded_is_no_url(url):
    assert normalize_url(url) == "" and site_of(url) == ""


async def test_a_redirect_between_the_two_spellings_of_an_idn_host_stays_on_the_site():
    async def resolve(host, port):
        assert host == "xn--bcher-kva.example"
        return ["127.0.0.1"]

    async with Site({"/page.html": lambda: web.Response(text="<p>ok</p>", content_type="text/html")}) as site, \
            _fetcher(resolve=resolve) as f:
        unicode_base = f"http://b\u00fccher.example:{site.port}"
        site._routes["/go"] = lambda: web.Response(
            status=302, headers={"Location": f"http://xn--bcher-kva.example:{site.port}/page.html"})
        r = await f.get(unicode_base + "/go", hosts={site_of(unicode_base + "/")})
    assert r.status == 200 and r.url == f"http://xn--bcher-kva.example:{site.port}/page.html"


# UTF-16 in the Content-Type header

@pytest.mark.parametrize("charset, codec", [("utf-16le", "utf-16-le"), ("UTF-16", "utf-16-le"), ("utf-16be", "utf-16-be")])
async def test_a_page_served_as_utf16_without_a_bom_is_read_as_utf16(charset, codec):
    html = "<html><title>Caf\u00e9</title><p>\u65e5\u672c \u2014 ok</p></html>"
    async with Site({"/p.html": lambda: web.Response(
            body=html.encode(codec), headers={"Content-Type": f"text/html; charset={charset}"})}) as site, \
            _fetcher() as f:
        r = await f.get(site.base + "/p.html")
    assert r.content_type == "text/html" and r.text == html


# Binary files labelled as text

@pytest.mark.parametrize("body", [
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"PK\x03\x04\x14\x00\x00\x00",
    gzip.compress(b"<p>hello</p>"), b"MZ\x90\x00\x03\x00\x00\x00 an executable",
], ids=["pdf", "png", "gif", "jpeg", "zip", "gzip", "nul bytes"])
@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/xhtml+xml"])
async def test_a_binary_file_labelled_as_text_is_binary(body, content_type):
    async with Site({"/f": lambda: web.Response(body=body, headers={"Content-Type": content_type})}) as site, \
            _fetcher() as f:
        r = await f.get(site.base + "/f")
    assert r.status == 200 and r.content_type == "application/octet-stream" and r.body == b""


@pytest.mark.parametrize("body, headers", [
    ("<p>caf\u00e9</p>".encode("utf-16"), {"Content-Type": "text/html"}),
    ("<p>caf\u00e9</p>".encode("utf-16-le"), {"Content-Type": "text/html; charset=utf-16le"}),
    (gzip.compress(b"<p>caf\xc3\xa9</p>"), {"Content-Type": "text/html", "Content-Encoding": "gzip"}),
    ("Caf\u00e9 %PDF- notes".encode(), {"Content-Type": "text/plain"}),
], ids=["utf-16 with a bom", "utf-16 label", "gzip content encoding", "a signature further in"])
async def test_text_that_merely_looks_binary_is_text(body, headers):
    async with Site({"/p": lambda: web.Response(body=body, headers=headers)}) as site, _fetcher() as f:
        r = await f.get(site.base + "/p")
    assert r.content_type == headers["Content-Type"].split(";")[0] and "caf\u00e9" in r.text.lower()


async def test_a_caller_that_accepts_binary_gets_the_body_of_a_binary_labelled_as_text():
    """A gzipped sitemap served as text/plain: the crawler accepts octet-stream as well, and gunzips it."""
    data = gzip.compress(b"<urlset/>")
    async with Site({"/sitemap.xml.gz": lambda: web.Response(body=data, headers={"Content-Type": "text/plain"})}
                    ) as site, _fetcher() as f:
        r = await f.get(site.base + "/sitemap.xml.gz", accept=("text/plain", "application/octet-stream"))
    assert r.content_type == "application/octet-stream" and r.body == data


# 429 and 503 with Retry-After

def _answers(*responses):
    """A route answering each response in turn, then the last one again; and when each request came."""
    made = list(responses)
    times: list[float] = []

    def route():
        times.append(time.monotonic())
        return made.pop(0)() if len(made) > 1 else made[0]()
    return route, times


def _refusal(status: int, retry_after: str | None):
    return lambda: web.Response(status=status, text="busy",
                                headers={"Retry-After": retry_after} if retry_after is not None else {})


def _ok():
    return web.Response(text="<p>ok</p>", content_type="text/html")


@pytest.mark.parametrize("status", [429, 503])
async def test_a_refusal_with_retry_after_seconds_is_asked_again_after_them(status):
    route, times = _answers(_refusal(status, "1"), _ok)
    async with Site({"/p.html": route}) as site, _fetcher() as f:
        r = await f.get(site.base + "/p.html")
    assert r.status == 200 and b"ok" in r.body and len(times) == 2
    assert times[1] - times[0] >= 0.99


async def test_retry_after_as_an_http_date_is_waited_for():
    route, times = _answers(lambda: _refusal(503, formatdate(time.time() + 1, usegmt=True))(), _ok)
    async with Site({"/p.html": route}) as site, _fetcher() as f:
        r = await f.get(site.base + "/p.html")
    assert r.status == 200 and len(times) == 2


async def test_a_refusal_is_asked_again_twice_at_most():
    route, times = _answers(_refusal(429, "0"))
    async with Site({"/p.html": route}) as site, _fetcher() as f:
        r = await f.get(site.base + "/p.html")
    assert r.status == 429 and len(times) == 3


@pytest.mark.parametrize("retry_after", [None, "-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_a_refusal_without_a_usable_retry_after_is_the_answer(retry_after):
    route, times = _answers(_refusal(429, retry_after), _ok)
    async with Site({"/p.html": route}) as site, _fetcher() as f:
        r = await f.get(site.base + "/p.html")
    assert r.status == 429 and len(times) == 1


async def test_a_wait_past_the_request_deadline_returns_the_refusal():
    route, times = _answers(_refusal(503, "5"), _ok)
    async with Site({"/p.html": route}) as site, _fetcher(request_seconds=2) as f:
        started = time.monotonic()
        r = await f.get(site.base + "/p.html")
    assert r.status == 503 and len(times) == 1 and time.monotonic() - started < 1


async def test_a_wait_of_over_30_seconds_is_cut_to_30(monkeypatch):
    route, times = _answers(_refusal(429, "3600"), _ok)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds, *args):
        sleeps.append(seconds)
        await real_sleep(0 if seconds >= 1 else seconds)

    async with Site({"/p.html": route}) as site, _fetcher(request_seconds=31) as f:
        monkeypatch.setattr(asyncio, "sleep", sleep)
        r = await f.get(site.base + "/p.html")
        monkeypatch.undo()
    assert r.status == 200 and len(times) == 2 and max(sleeps) == 30


async def test_the_hosts_other_requests_wait_out_a_retry_after_too():
    route, times = _answers(_refusal(429, "1"), _ok)
    other, other_times = _answers(_ok)
    async with Site({"/busy.html": route, "/other.html": other}) as site, _fetcher(host_concurrency=2) as f:
        busy = asyncio.create_task(f.get(site.base + "/busy.html"))
        await asyncio.sleep(0.3)           # the refusal is in by now
        assert (await f.get(site.base + "/other.html")).status == 200
        assert (await busy).status == 200
    assert other_times[0] - times[0] >= 0.95


@pytest.mark.parametrize("value, seconds", [
    ("0", 0), ("7", 7), ("  12 ", 12), ("-1", None), ("1.5", None), ("soon", None), ("", None), ("\u0663".encode(), None),
    ("9" * 5000, 10**9),
], ids=["0", "7", "spaces", "negative", "fraction", "words", "empty", "arabic-indic digit", "5000 digits"])
def test_retry_after_is_read_as_rfc_9110_says(value, seconds):
    assert retry_after_seconds(httpx.Headers({"Retry-After": value})) == seconds


def test_retry_after_as_a_date_counts_from_the_responses_date():
    headers = httpx.Headers({"Date": "Wed, 21 Oct 2015 07:28:00 GMT", "Retry-After": "Wed, 21 Oct 2015 07:28:09 GMT"})
    assert retry_after_seconds(headers) == 9
    assert retry_after_seconds(httpx.Headers({"Retry-After": formatdate(time.time() - 60, usegmt=True)})) is None


# The state a long-lived fetcher keeps per origin (the scraper API's, which the admin's Fetch can point
# at any host).

async def test_a_fetcher_keeps_gates_and_robots_of_a_bounded_number_of_origins(monkeypatch):
    from services.scraper import fetching

    fetcher = _fetcher()

    async def no_rules(origin):
        return None, fetching.ROBOTS_TTL_SECONDS, ""

    monkeypatch.setattr(fetcher, "_load_robots", no_rules)
    busy, held = fetcher.gate("http://busy.example/"), fetcher.gate("http://held.example/")
    held.hold(60)                             # a host that asked for a pause (Retry-After)
    async with busy:
        for i in range(3 * fetching.MAX_ORIGINS):
            assert await fetcher.allowed(f"http://h{i}.example/page")
            fetcher.gate(f"http://h{i}.example/page")
        # Those in use or on hold are the same gates still: politeness towards them is kept.
        assert fetcher.gate("http://busy.example/") is busy and fetcher.gate("http://held.example/") is held
    assert len(fetcher._gates) <= fetching.MAX_ORIGINS
    assert len(fetcher._robots) <= fetching.MAX_ORIGINS and len(fetcher._robots_lock) <= fetching.MAX_ORIGINS
    # The latest origins' rules are still known; a forgotten one is read again when asked.
    assert f"http://h{3 * fetching.MAX_ORIGINS - 1}.example" in fetcher._robots
    assert await fetcher.allowed("http://h0.example/page")
    await fetcher.aclose()
