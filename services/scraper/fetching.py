"""Polite HTTP fetching: redirects, size and type limits, robots.txt, per-host politeness, retries that a
Retry-After asks for. Where it may connect is checked at connect time (addresses.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
from protego import Protego

from services.scraper.addresses import AddressPolicy, GuardedTransport, Resolver, is_ip, parse_networks, system_resolve
from services.scraper.encodings import decode_document, looks_binary
from services.scraper.urls import normalize_url, require_url, site_of

logger = logging.getLogger(__name__)

INDEXABLE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
BINARY_TYPE = "application/octet-stream"
ROBOTS_TTL_SECONDS = 600.0
ROBOTS_UNREACHABLE_TTL_SECONDS = 30.0   # an unreachable robots.txt disallows for this long, then is asked again
ROBOTS_MAX_BYTES = 500 * 1024           # RFC 9309 2.5: parsers must read at least the first 500 KiB
# Origins a Fetcher keeps politeness gates and robots.txt for: the scraper API's lives as long as its
# process, and a Fetch with the admin token may name any host.
MAX_ORIGINS = 1_000
# A 429 or 503 that says when to come back (Retry-After) is asked again then, this many times at most,
# waiting this long at most, and always within the request's deadline.
RETRY_STATUSES = (429, 503)
MAX_RETRIES = 2
MAX_RETRY_AFTER_SECONDS = 30.0
class FetchFailed(Exception):
    """A fetch that produced no usable response (network error, redirect loop, too large, ...)."""

    def __init__(self, reason: str, kind: str = "failed", response: Response | None = None,
                 permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind            # failed | too_large | robots | off_site
        self.response = response    # status and headers, when the origin answered
        self.permanent = permanent  # robots, off_site: every redirect that led there was permanent (301, 308)


PERMANENT_REDIRECTS = (301, 308)


class Redirect(NamedTuple):
    url: str          # normalised
    status: int


@dataclass
class Response:
    url: str                      # final URL after redirects
    status: int
    headers: httpx.Headers
    body: bytes = b""
    content_type: str = ""
    redirects: list[str] = field(default_factory=list)
    permanent: bool = True        # every redirect that led here (if any) was permanent (301, 308)

    @property
    def text(self) -> str:
        return decode_document(self.body, self.headers.get("content-type", ""))


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """How long a response's Retry-After asks to wait (RFC 9110 10.2.3: delta-seconds or an HTTP-date,
    counted from the response's Date when it has one, for the origin's clock may not be ours); None when
    it has none or one that is negative or unreadable."""
    value = headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 9 else 1e9   # far longer than any wait is allowed anyway
    when = _http_date(value)
    if when is None:
        return None
    seconds = (when - (_http_date(headers.get("date", "")) or datetime.now(timezone.utc))).total_seconds()
    return seconds if seconds >= 0 else None


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)   # "-0000": GMT all the same


class HostGate:
    """Per-host politeness: at most `concurrency` requests in flight and `delay` between their starts."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self.delay = delay
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._users = 0   # requests in flight or waiting

    def idle(self) -> bool:
        """Nothing in flight or waiting, and no delay or hold pending: forgetting it loses nothing."""
        return self._users == 0 and self._next <= time.monotonic()

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._sem.acquire()
        except BaseException:
            self._users -= 1
            raise
        try:
            async with self._lock:
                # Again after sleeping: a hold may have come in meanwhile.
                while (wait := self._next - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                self._next = time.monotonic() + self.delay
        except BaseException:
            # Cancelled while waiting its turn (the caller's deadline): __aexit__ never runs, and a slot
            # kept here would be the site's for good (the scraper API keeps its Fetcher for its life).
            await self.__aexit__()
            raise

    def hold(self, seconds: float) -> None:
        """No request starts for `seconds` (the host asked, with Retry-After)."""
        self._next = max(self._next, time.monotonic() + seconds)

    async def __aexit__(self, *exc) -> None:
        self._sem.release()
        self._users -= 1


class Fetcher:
    """One HTTP client for a crawl job or the Fetch RPC: safe addresses, polite per host, bounded."""

    def __init__(
        self,
        *,
        user_agent: str,
        policy: AddressPolicy,
        max_bytes: int = 2_000_000,
        max_redirects: int = 5,
        timeout: float = 10.0,
        request_seconds: float = 30.0,
        host_concurrency: int = 2,
        host_delay: float = 0.25,
        resolve: Resolver = system_resolve,
        deadline_covers_wait: bool = True,
        gates: dict[str, HostGate] | None = None,
    ) -> None:
        """request_seconds bounds each request, retries included, and with deadline_covers_wait also its
        wait for a turn at the site (its slots, its delay or a Retry-After hold): a Fetch, whose caller
        waits, never waits longer. A crawl's requests queue behind the site's Crawl-delay for as long as
        it takes (deadline_covers_wait=False), bounded by the job's own time limit. `gates`: the sites'
        politeness gates, shared with other fetchers (a worker's crawl jobs of one site take turns)."""
        self.user_agent = user_agent
        self.policy = policy
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.request_seconds = request_seconds
        self.host_concurrency = host_concurrency
        self.host_delay = host_delay
        self.deadline_covers_wait = deadline_covers_wait
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, resolve),
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip", "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )
        self._gates: dict[str, HostGate] = {} if gates is None else gates
        self._robots: dict[str, tuple[float, Protego | None, str]] = {}   # origin -> (expiry, rules, problem)
        self._robots_lock: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def gate(self, url: str) -> HostGate:
        origin = _origin(url)
        gate = self._gates.get(origin)
        if gate is None:
            if len(self._gates) >= MAX_ORIGINS:
                for idle in [o for o, g in self._gates.items() if g.idle()]:   # in place: it may be shared
                    del self._gates[idle]
            gate = self._gates[origin] = HostGate(self.host_concurrency, self.host_delay)
        return gate

    async def get(
        self, url: str, *, headers: dict[str, str] | None = None, accept: Collection[str] | None = INDEXABLE_TYPES,
        obey_robots: bool = False, hosts: Collection[str] | None = None, max_bytes: int | None = None,
        cut: bool = False,
    ) -> Response:
        """GET with redirects followed by hand (each hop connects through the address check), a redirect
        limit and loop detection, and the body read only up to max_bytes and only for accepted types
        (None: any). A response of another type comes back with an empty body, and so does a binary
        file labelled as text, as application/octet-stream (unless that is accepted). With obey_robots,
        every redirect target is checked against its own site's robots.txt (the caller checked the first
        URL); with hosts (sites, as `site_of` names them: host and port), a redirect off them is not
        followed. max_bytes replaces the fetcher's page size limit for this request (sitemaps are
        larger); with cut, a larger body is cut there instead of failing. A 429 or 503 with Retry-After
        is asked again when it says (see `_request`)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        seen: list[str] = []
        current = require_url(url)
        permanent = True
        while True:
            if current in seen:
                raise FetchFailed(f"redirect loop at {current}")
            if seen and hosts is not None and site_of(current) not in hosts:
                raise FetchFailed(f"{seen[-1]} redirects off the site, to {current}", "off_site", permanent=permanent)
            if seen and obey_robots and not await self.allowed(current):
                raise FetchFailed(f"robots.txt disallows {current} (a redirect from {seen[-1]})", "robots",
                                  permanent=permanent)
            seen.append(current)
            if is_ip(urlsplit(current).hostname or ""):
                self.policy.check(urlsplit(current).hostname or "", urlsplit(current).hostname or "")
            try:
                got = await self._request(current, _hop_headers(headers, len(seen)), accept, limit, cut)
            except httpx.TimeoutException as exc:
                raise FetchFailed(f"timed out fetching {current}") from exc
            except TimeoutError as exc:
                raise FetchFailed(f"{current} took longer than {self.request_seconds:g} s") from exc
            except (httpx.InvalidURL, UnicodeError) as exc:   # a host name httpx cannot send (spaces,
                raise FetchFailed(f"cannot fetch {current}: {exc}") from exc   # controls, a false "xn--" label)
            except httpx.HTTPError as exc:
                raise FetchFailed(f"cannot fetch {current}: {exc.__class__.__name__} {exc}") from exc
            if isinstance(got, Response):
                got.redirects, got.permanent = seen[:-1], permanent
                return got
            if len(seen) > self.max_redirects:
                raise FetchFailed(f"more than {self.max_redirects} redirects from {url}")
            current, permanent = got.url, permanent and got.status in PERMANENT_REDIRECTS

    async def _request(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
    ) -> Response | Redirect:
        """One hop: its response, or where it redirects to. A 429 or 503 whose Retry-After can be read
        holds the host's gate that long (30 s at most), so none of its requests starts meanwhile, and is
        asked again then, twice at most, if that is before the deadline; otherwise it is the answer."""
        gate = self.gate(url)
        # httpx times each read; this, the whole request, retries included (a page sent a byte every few
        # seconds would otherwise hold its crawl job for good), and the wait for the site's turn unless
        # the fetcher's requests may queue (a crawl's).
        if self.deadline_covers_wait:
            async with asyncio.timeout(self.request_seconds) as deadline, gate:
                return await self._asked(url, headers, accept, limit, cut, gate, deadline)
        async with gate, asyncio.timeout(self.request_seconds) as deadline:
            return await self._asked(url, headers, accept, limit, cut, gate, deadline)

    async def _asked(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
        gate: HostGate, deadline: asyncio.Timeout,
    ) -> Response | Redirect:
        """The exchanges of one hop, in its turn at the site: asked again after a Retry-After (see _request)."""
        retries = 0
        while True:
            got = await self._exchange(url, headers, accept, limit, cut)
            if not isinstance(got, Response) or got.status not in RETRY_STATUSES:
                return got
            wait = retry_after_seconds(got.headers)
            if wait is None:
                return got
            wait = min(wait, MAX_RETRY_AFTER_SECONDS)
            gate.hold(wait)
            if retries == MAX_RETRIES or asyncio.get_running_loop().time() + wait >= deadline.when():
                return got
            retries += 1
            logger.info("%s answered HTTP %s: asking again in %.3g s", url, got.status, wait)
            await asyncio.sleep(wait)

    async def _exchange(
        self, url: str, headers: dict[str, str] | None, accept: Collection[str] | None, limit: int, cut: bool,
    ) -> Response | Redirect:
        """One request: where it redirects to, or its response with the body of an accepted type."""
        async with self._client.stream("GET", url, headers=headers) as r:
            if r.is_redirect and "location" in r.headers:
                await _drain_small(r)
                nxt = normalize_url(r.headers["location"], url)
                if not nxt:
                    raise FetchFailed(f"redirect to an unsupported URL from {url}")
                return Redirect(nxt, r.status_code)
            ctype = r.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            resp = Response(url, r.status_code, r.headers, content_type=ctype)
            if r.status_code != 200 or (accept is not None and ctype not in accept):
                await _drain_small(r)
                return resp
            resp.body = await _read_body(r, resp, limit, cut)
            if ctype in INDEXABLE_TYPES and looks_binary(resp.body, r.headers.get("content-type", "")):
                resp.content_type = BINARY_TYPE
                if accept is not None and BINARY_TYPE not in accept:
                    resp.body = b""
            return resp

    async def robots(self, url: str) -> Protego | None:
        """The parsed robots.txt of the URL's origin (None: no rules), kept for ROBOTS_TTL_SECONDS."""
        return (await self._robots_entry(url))[1]

    async def robots_problem(self, url: str) -> str:
        """Why the robots.txt of the URL's origin could not be read ('' when it was, or is absent):
        while it cannot, nothing there is fetched."""
        return (await self._robots_entry(url))[2]

    async def _robots_entry(self, url: str) -> tuple[float, Protego | None, str]:
        origin = _origin(url)
        cached = self._robots.get(origin)
        if cached and cached[0] > time.monotonic():
            return cached
        if origin not in self._robots_lock and len(self._robots_lock) >= MAX_ORIGINS:
            self._forget_robots()
        lock = self._robots_lock.setdefault(origin, asyncio.Lock())
        async with lock:
            cached = self._robots.get(origin)
            if not cached or cached[0] <= time.monotonic():
                rules, ttl, problem = await self._load_robots(origin)
                cached = (time.monotonic() + ttl, rules, problem)
                self._robots[origin] = cached
        return cached

    def _forget_robots(self) -> None:
        """Keeps the robots.txt of at most MAX_ORIGINS origins: the expired go first, then the oldest
        half (they are read again when asked); a lock is dropped only when no one holds it."""
        now = time.monotonic()
        kept = {o: e for o, e in self._robots.items() if e[0] > now}
        if len(kept) >= MAX_ORIGINS // 2:
            kept = dict(list(kept.items())[len(kept) - MAX_ORIGINS // 2:])
        self._robots = kept
        self._robots_lock = {o: lock for o, lock in self._robots_lock.items() if lock.locked() or o in kept}

    async def _load_robots(self, origin: str) -> tuple[Protego | None, float, str]:
        """RFC 9309 2.3.1: a robots.txt that is unreachable (network error, timeout) or answers a
        server error means "complete disallow" — asked again after ROBOTS_UNREACHABLE_TTL_SECONDS;
        4xx means "no rules". (rules, seconds to keep them, why it could not be read or '')."""
        try:
            # Whatever its Content-Type says (servers label it text/html, or not at all): it is text.
            r = await self.get(origin + "/robots.txt", accept=None, max_bytes=ROBOTS_MAX_BYTES, cut=True)
        except FetchFailed as exc:
            problem = f"robots.txt of {origin} could not be read ({exc.reason})"
        else:
            if r.status < 500:
                return (_parse_robots(r) if r.status == 200 else None), ROBOTS_TTL_SECONDS, ""
            problem = f"robots.txt of {origin} could not be read (HTTP {r.status})"
        logger.warning("%s; as RFC 9309 asks, nothing there is fetched until it can be", problem)
        return DISALLOW_ALL, ROBOTS_UNREACHABLE_TTL_SECONDS, problem

    async def allowed(self, url: str) -> bool:
        """robots.txt lets the URL be fetched, matched as it is requested (normalised: a URL recorded in
        another spelling, /a/./secret, is requested as /a/secret)."""
        url = normalize_url(url) or url
        rules = await self.robots(url)
        return rules is None or rules.can_fetch(url, self.user_agent)

    async def crawl_delay(self, url: str) -> float:
        rules = await self.robots(url)
        delay = rules.crawl_delay(self.user_agent) if rules is not None else None
        return float(delay) if delay else 0.0


DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")


def _parse_robots(r: Response) -> Protego:
    """The rules of a robots.txt; one cut at ROBOTS_MAX_BYTES loses its last line, which the cut may
    have shortened ("Disallow: /a/b" to "Disallow: /", all)."""
    body = r.body.rpartition(b"\n")[0] if len(r.body) >= ROBOTS_MAX_BYTES else r.body
    return Protego.parse(decode_document(body, r.headers.get("content-type", "")))


def _hop_headers(headers: dict[str, str] | None, hop: int) -> dict[str, str] | None:
    """Conditional headers go on the first request; after a redirect only If-None-Match (the stored
    validators are the final response's, and an entity tag cannot match another resource by date)."""
    if not headers or hop == 1:
        return headers
    return {k: v for k, v in headers.items() if k.lower() == "if-none-match"} or None


async def _drain_small(r: httpx.Response, limit: int = 65536) -> None:
    """Reads the small body of a response that is not used (304, redirect, error page), so that its
    connection goes back to the pool instead of being closed; a large or unknown-length one is dropped."""
    declared = r.headers.get("content-length", "")
    if r.status_code in (204, 304) or (declared.isdigit() and int(declared) <= limit):
        await r.aread()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _read_body(r: httpx.Response, resp: Response, limit: int, cut: bool) -> bytes:
    """The body, at most `limit` bytes: larger fails as too_large, or with cut is cut there (the rest
    is not read)."""
    declared = r.headers.get("content-length", "")
    if not cut and declared.isdigit() and int(declared) > limit:
        raise FetchFailed(f"{resp.url} is {declared} bytes; the limit is {limit}", "too_large", resp)
    body = bytearray()
    async for part in r.aiter_raw():
        body += part
        if len(body) > limit:
            if not cut:
                raise FetchFailed(f"{resp.url} is larger than {limit} bytes", "too_large", resp)
            del body[limit:]
            break
    return _decode_body(bytes(body), r.headers.get("content-encoding", ""), limit, cut)


def _decode_body(body: bytes, encoding: str, limit: int, cut: bool = False) -> bytes:
    """Content-Encoding was read raw (so the size limit applies to what crossed the wire); undo gzip here,
    bounded as well so a small gzip bomb cannot expand without limit."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gunzip_bounded(body, limit, cut=cut)
    if encoding in ("", "identity"):
        return body
    raise FetchFailed(f"unsupported content encoding {encoding!r}")


def gunzip_bounded(data: bytes, limit: int, *, cut: bool = False) -> bytes:
    """gzip data decompressed, at most `limit` bytes: larger fails as too_large, or with cut is cut there
    (data cut short decompresses as far as it goes)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise FetchFailed(f"the gzip data is corrupt ({exc})") from None
    if len(out) > limit:
        if cut:
            return out[:limit]
        raise FetchFailed(f"decompressed body is larger than {limit} bytes", "too_large")
    return out


def new_fetcher(settings, *, resolve: Resolver = system_resolve, deadline_covers_wait: bool = True,
                gates: dict[str, HostGate] | None = None) -> Fetcher:
    """A Fetcher configured from `PARLEY_SCRAPER_*` settings (see Fetcher for deadline_covers_wait and gates)."""
    return Fetcher(
        user_agent=settings.scraper_user_agent,
        policy=AddressPolicy(parse_networks(settings.scraper_allow_networks)),
        max_bytes=settings.scraper_max_page_bytes,
        max_redirects=settings.scraper_max_redirects,
        timeout=settings.scraper_timeout_seconds,
        request_seconds=settings.scraper_request_seconds,
        host_concurrency=settings.scraper_host_concurrency,
        host_delay=settings.scraper_host_delay_seconds,
        resolve=resolve,
        deadline_covers_wait=deadline_covers_wait,
        gates=gates,
    )
