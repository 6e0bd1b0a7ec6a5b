"""One page on demand (the web strategy): fetched safely and politely, its main text cached in Redis."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import redis.asyncio as redis

from services.common.errors import InvalidArgument, ParleyError, PermissionDenied, Unavailable
from services.common.hosts import host_problem
from services.common.redis_client import RedisHealth
from services.scraper.extract import robots_directives
from services.scraper.fetching import Fetcher, FetchFailed
from services.scraper.urls import require_url, site_of
from services.scraper.isolation import HTML_TYPES, ExtractionFailed, Extractor, extract

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
CACHE_PREFIX = "parley:scraper:page:v2:"
# A Fetch that failed for what the page is (too large, not HTML, past the extraction limits, refused
# by robots.txt or noindex) is answered the same way, from the cache, for a tenth of the page TTL and
# at most this long: each try would cost the origin a request and the extractor (shared by every key)
# its time limit. One that failed for now (the origin or the network, or its turn at a busy site not
# coming within its time) is not kept: the next Fetch tries again.
FAILURE_TTL_SECONDS = 60
_FAILURES: dict[str, type[ParleyError]] = {"invalid": InvalidArgument, "denied": PermissionDenied}


@dataclass
class FetchedPage:
    url: str
    title: str
    text: str
    status: int
    cached: bool = False


class PageCache:
    """Fetch's pages in Redis, a soft dependency. While Redis fails, one Fetch a second tries it; the
    others go to the origin at once instead of each waiting out the socket timeout twice (a frozen
    Redis would otherwise cost a second a Fetch, half the web strategy's time)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.health = RedisHealth(1.0, "Fetch reads pages without the page cache")

    async def get(self, key: str) -> bytes | None:
        if not self.health.available():
            return None
        try:
            hit = await self.client.get(key)
        except redis.RedisError as exc:
            self.health.failed("page cache", exc)
            return None
        self.health.ok()
        return hit

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        if not self.health.available():
            return
        try:
            await self.client.set(key, value, ex=ttl_seconds)
        except redis.RedisError as exc:
            self.health.failed("page cache", exc)
            return
        self.health.ok()


def cache_key(url: str, hosts: frozenset[str] | None = None) -> str:
    """A page is cached per scope (the sites a caller may read, or any): what a Fetch with the admin
    token read at a URL, following a redirect off a key's website, is not the key's to be served."""
    scope = "*" if hosts is None else " ".join(sorted(hosts))
    return CACHE_PREFIX + hashlib.sha256(f"{scope}\n{url}".encode()).hexdigest()


def site_hosts(website: str) -> frozenset[str]:
    """The sites of a key's website (`site_of`: host and port): its own, with and without a leading `www.`."""
    site = site_of(require_url(website))
    bare = site.removeprefix("www.")
    return frozenset({bare, "www." + bare})


async def fetch_page(fetcher: Fetcher, cache: PageCache, url: str, ttl_seconds: int,
                     hosts: frozenset[str] | None = None, extractor: Extractor | None = None) -> FetchedPage:
    """The cached page when there is one; otherwise fetch (robots.txt and the address policy apply),
    extract the main content and cache it for ttl_seconds (origin errors for a tenth of that; a failed
    Fetch's answer too, see FAILURE_TTL_SECONDS).
    With hosts (sites: host and port), only a URL on them is fetched, and a redirect off them is not followed.
    Failures say what the caller can act on; the origin's or the network's details are logged only."""
    url = require_url(url)
    if hosts is not None and site_of(url) not in hosts:
        raise PermissionDenied("Fetch reads pages of the product key's website only")
    key = cache_key(url, hosts)
    hit = await cache.get(key)
    if hit:
        stored = json.loads(hit)
        if "failure" in stored:
            raise _FAILURES[stored["failure"]](stored["message"])
        return FetchedPage(**{**stored, "cached": True})
    try:
        page = await _fetch(fetcher, url, hosts, extractor)
    except (InvalidArgument, PermissionDenied) as exc:
        kind = next(k for k, cls in _FAILURES.items() if isinstance(exc, cls))
        await cache.put(key, json.dumps({"failure": kind, "message": exc.message}),
                        min(max(1, ttl_seconds // 10), FAILURE_TTL_SECONDS))
        raise
    ttl = ttl_seconds if page.status == 200 else max(1, ttl_seconds // 10)
    await cache.put(key, json.dumps({k: v for k, v in asdict(page).items() if k != "cached"}), ttl)
    return page


async def _fetch(fetcher: Fetcher, url: str, hosts: frozenset[str] | None, extractor: Extractor | None) -> FetchedPage:
    if problem := host_problem(urlsplit(url).hostname or ""):
        raise InvalidArgument(f"cannot fetch {url}: {problem}")
    if not await fetcher.allowed(url):
        # An unreadable robots.txt disallows the site (RFC 9309) while the site cannot be reached: for
        # the caller that is a page that could not be fetched, not a refusal.
        if await fetcher.robots_problem(url):
            raise Unavailable(f"{url} could not be fetched from its site; try again later")
        raise PermissionDenied(f"robots.txt of {url} disallows fetching it")
    try:
        resp = await fetcher.get(url, obey_robots=True, hosts=hosts)
    except FetchFailed as exc:
        logger.info("Fetch %s failed: %s", url, exc.reason)
        if exc.kind == "too_large":
            raise InvalidArgument(f"{url} is larger than the page size limit") from None
        if exc.kind == "robots":
            raise PermissionDenied(f"{url} redirects to a page robots.txt disallows") from None
        if exc.kind == "off_site":
            raise PermissionDenied(f"{url} redirects off the product key's website") from None
        raise Unavailable(f"{url} could not be fetched from its site; try again later") from None
    page = FetchedPage(url=resp.url, title="", text="", status=resp.status)
    if resp.status == 200:
        if resp.content_type not in (*HTML_TYPES, "text/plain"):
            raise InvalidArgument(f"{resp.url} is {resp.content_type or 'of no declared type'}, not HTML or text")
        try:
            extracted = (await extractor.page(resp.content_type, resp.text, resp.url) if extractor is not None
                         else extract(resp.content_type, resp.text, resp.url))
        except ExtractionFailed as exc:
            logger.warning("Fetch %s: %s", url, exc)
            if exc.reason == "unavailable":     # nothing said of the page: not cached, try again
                raise Unavailable("pages cannot be read right now; try again shortly") from None
            raise InvalidArgument(f"{resp.url} could not be read within the page limits") from None
        noindex, _ = robots_directives(resp.headers.get("x-robots-tag", ""))
        if extracted.noindex or noindex:
            raise PermissionDenied(f"{resp.url} asks not to be indexed (noindex)")
        page.url = extracted.canonical or resp.url
        page.title = extracted.title
        page.text = extracted.text[:MAX_TEXT_CHARS]
    return page
