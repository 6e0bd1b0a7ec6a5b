"""One crawl job: frontier, robots, sitemaps, conditional re-fetch, extraction and per-page chunk replacement."""

from __future__ import annotations

import asyncio
import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from services.common.errors import is_transient
from services.common.kafka import new_event_id, now_timestamp
from services.common.text import storable
from services.common.pb.parley.v1 import events_pb2
from services.scraper.extract import Page, chunk_page, robots_directives
from services.scraper.addresses import BlockedAddress
from services.scraper.fetching import Fetcher, FetchFailed, gunzip_bounded, Response
from services.scraper.urls import normalize_url, site_of
from services.scraper.isolation import HTML_TYPES, ExtractionFailed, Extractor, extract
from services.scraper.patterns import UrlPatterns

logger = logging.getLogger(__name__)

SITEMAP_ACCEPT = ("application/xml", "text/xml", "application/gzip", "application/x-gzip",
                  "application/octet-stream", "text/plain")
MAX_SITEMAPS = 50
# The sitemap protocol's limit of one sitemap, uncompressed (50,000 URLs): a page's size limit would cut it.
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
# A sitemap's pages are admitted this many at a time, the event loop given back between.
SITEMAP_BATCH = 500
MAX_CRAWL_DELAY = 10.0
# A page the sitemap says has not changed since we fetched it is not requested at all, unless our
# copy is older than this (a stale lastmod must not hide changes for ever). The slack absorbs clock
# differences and lastmod's coarse precision, in the direction of fetching.
REVALIDATE_AFTER = timedelta(hours=24)
LASTMOD_SLACK = timedelta(seconds=2)

# Hands an extracted (or removed) page to the search service's indexer, the only writer of knowledge.
Handover = Callable[[events_pb2.KnowledgePage], Awaitable[None]]


@dataclass
class CrawlSpec:
    job_id: str
    product_key_id: str
    seed_urls: list[str]
    sitemap_url: str = ""
    max_pages: int = 100
    max_depth: int = 3
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class Progress:
    pages_seen: int = 0
    pages_fetched: int = 0          # fetched and (re)indexed because new or changed
    pages_unchanged: int = 0        # 304, or the same content hash
    pages_failed: int = 0
    pages_robots_skipped: int = 0
    pages_skipped: int = 0          # noindex, not HTML/text, too large, empty, off-site redirect
    # Gone (404/410), now noindex, empty, not HTML/text, disallowed by robots.txt or moved for good (off
    # the site, or to a page another URL leads to): their record no longer leads to their text, which is
    # deleted unless another URL leads to it.
    pages_removed: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class KnownPage:
    url: str
    document: str
    etag: str
    last_modified: str
    content_hash: bytes | None
    links: list[str]
    fetched_at: datetime | None = None
    chunk_count: int = 0


STORE_RETRY_SECONDS = 30.0   # how long a page's record is retried while PostgreSQL is unreachable


class PageStore:
    """crawled_pages (the crawl's own state) and the hand-over of changed pages to the indexer.

    A page is handed over (and acknowledged by Kafka) before crawled_pages records its new content
    hash: if the hand-over fails, the next crawl sees the page as changed and hands it over again."""

    def __init__(self, pool: asyncpg.Pool, key_id: str, handover: Handover, job_id: str = "") -> None:
        self.pool = pool
        self.key_id = key_id
        self.handover = handover
        self.job_id = job_id

    async def _written(self, write: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
        """`write` on a connection of the pool, again while PostgreSQL is unreachable or restarting (up to
        STORE_RETRY_SECONDS): a restart of a few seconds does not fail the pages crawled meanwhile."""
        async for attempt in AsyncRetrying(retry=retry_if_exception(is_transient), reraise=True,
                                           stop=stop_after_delay(STORE_RETRY_SECONDS),
                                           wait=wait_exponential(0.2, max=2.0)):
            with attempt:
                async with self.pool.acquire() as conn:
                    await write(conn)

    async def load(self) -> dict[str, KnownPage]:
        rows = await self.pool.fetch(
            "SELECT url, document, etag, last_modified, content_hash, links, fetched_at, chunk_count FROM crawled_pages"
            " WHERE product_key_id = $1",
            self.key_id,
        )
        return {r["url"]: KnownPage(r["url"], r["document"], r["etag"], r["last_modified"], r["content_hash"],
                                    list(r["links"]), r["fetched_at"], r["chunk_count"]) for r in rows}

    async def _upsert(self, conn, url: str, document: str, resp: Response, content_hash: bytes | None,
                      title: str, chunk_count: int, links: list[str], changed: bool) -> None:
        await conn.execute(
            """
            INSERT INTO crawled_pages (product_key_id, url, document, status, etag, last_modified, content_hash,
                                       title, chunk_count, links)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (product_key_id, url) DO UPDATE SET
                document = EXCLUDED.document, status = EXCLUDED.status, etag = EXCLUDED.etag,
                last_modified = EXCLUDED.last_modified, content_hash = EXCLUDED.content_hash,
                title = EXCLUDED.title, chunk_count = EXCLUDED.chunk_count, links = EXCLUDED.links,
                fetched_at = now(), changed_at = CASE WHEN $11 THEN now() ELSE crawled_pages.changed_at END
            """,
            self.key_id, url, document, resp.status, resp.headers.get("etag", ""),
            resp.headers.get("last-modified", ""), content_hash, storable(title), chunk_count, links, changed,
        )

    async def remember(self, url: str, resp: Response, links: list[str], content_hash: bytes | None = None,
                       document: str = "", title: str = "") -> None:
        """Validators (and links) of a page whose chunks do not change."""
        await self._written(lambda conn: self._upsert(conn, url, document, resp, content_hash, title, 0, links, False))

    def _page_event(self, url: str, document: str, **fields) -> events_pb2.KnowledgePage:
        return events_pb2.KnowledgePage(event_id=new_event_id(), occurred_at=now_timestamp(), product_key_id=self.key_id,
                                        url=url, document=document, job_id=self.job_id, **fields)

    async def replace(self, url: str, document: str, old_document: str, resp: Response, page: Page,
                      chunks: list[str]) -> int:
        """Hands the page's chunks over (they replace its previous ones), then records it: chunks handed over."""
        # What a page says is the stranger's: NUL (a UTF-16 text read as UTF-8), escapes, bidi overrides go.
        chunks = list(dict.fromkeys(c for c in map(storable, chunks) if c.strip()))
        await self.handover(self._page_event(url, document, old_document=old_document, title=storable(page.title),
                                             chunks=chunks))
        await self._written(lambda conn: self._upsert(conn, url, document, resp, page.content_hash(), page.title,
                                                      len(chunks), page.links, True))
        return len(chunks)

    async def remove(self, url: str, document: str) -> None:
        """The text of `document` (and of `url`, a document too) goes from the knowledge."""
        await self.handover(self._page_event(url, document or url, removed=True))

    async def drop(self, url: str, gone: list[str], resp: Response | None = None, links: list[str] | None = None
                   ) -> None:
        """The URL no longer leads to its text: the documents `gone` (its document, when no other URL
        leads there) are removed, then its record is deleted or, with `resp`, keeps only its validators and
        links."""
        if gone:
            await self.remove(gone[-1], gone[0])
        if resp is None:
            await self._written(lambda conn: conn.execute(
                "DELETE FROM crawled_pages WHERE product_key_id = $1 AND url = $2", self.key_id, url))
        else:
            await self._written(lambda conn: self._upsert(conn, url, "", resp, None, "", 0, links or [], True))

    async def bequeath(self, heir: str, chunk_count: int, content_hash: bytes | None) -> None:
        """Another URL's record that led to the same document as `heir`'s, the one that wrote its
        chunks, is gone: `heir`'s record counts them (and takes their content hash when it has none), so
        that they are counted when they go and an unchanged page is not written again."""
        await self._written(lambda conn: conn.execute(
            "UPDATE crawled_pages SET chunk_count = chunk_count + $3, content_hash = coalesce(content_hash, $4)"
            " WHERE product_key_id = $1 AND url = $2", self.key_id, heir, chunk_count, content_hash))


def _same_page(a: str, b: str) -> bool:
    """The same host and path (a trailing slash aside): the URLs differ in their query (tracking,
    session or sort parameters) or scheme only."""
    x, y = urlsplit(a), urlsplit(b)
    return x.hostname == y.hostname and x.path.rstrip("/") == y.path.rstrip("/")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_lastmod(value: str) -> datetime | None:
    """A W3C datetime of a sitemap (a date alone, or with time and zone) in UTC; None when malformed."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def parse_sitemap(data: bytes) -> tuple[list[tuple[str, datetime | None]], list[str]]:
    """([(page URL, lastmod)], nested sitemap URLs) of a sitemap or sitemap index; nothing when it is
    not XML."""
    try:
        return read_sitemap(data)
    except ET.ParseError:
        return [], []


def read_sitemap(data: bytes) -> tuple[list[tuple[str, datetime | None]], list[str]]:
    """parse_sitemap, or ET.ParseError. Read entry by entry, each dropped once read: a sitemap of
    SITEMAP_MAX_BYTES is never held as a whole tree."""
    pages: list[tuple[str, datetime | None]] = []
    nested: list[str] = []
    root = None
    for event, elem in ET.iterparse(io.BytesIO(data), events=("start", "end")):
        if event == "start":
            if root is None:
                root = elem
            continue
        if root is None or elem not in root:
            continue    # a field of an entry: read with its entry
        fields = {_local(child.tag): (child.text or "").strip() for child in elem}
        root.remove(elem)
        loc = fields.get("loc", "")
        if not loc:
            continue
        if _local(root.tag) == "sitemapindex":
            nested.append(loc)
        else:
            pages.append((loc, parse_lastmod(fields["lastmod"]) if fields.get("lastmod") else None))
    return pages, nested


def _sitemap_entries(data: bytes, hosts: frozenset[str]) -> tuple[list[tuple[str, datetime | None]], list[str]]:
    """A fetched sitemap's ([(page URL as written, lastmod)], nested sitemaps on `hosts`, normalised):
    gunzipped when it is gzip (bounded), then read. Run in a thread."""
    if data[:2] == b"\x1f\x8b":
        data = gunzip_bounded(data, SITEMAP_MAX_BYTES)
    pages, nested = read_sitemap(data)
    return pages, [n for n in (normalize_url(x) for x in nested) if n and site_of(n) in hosts]


class Crawler:
    """Crawls one job's pages with bounded concurrency; progress is reported through on_progress."""

    def __init__(
        self,
        spec: CrawlSpec,
        fetcher: Fetcher,
        store: PageStore,
        *,
        concurrency: int = 8,
        on_progress: Callable[[Progress], Awaitable[None]] | None = None,
        progress_interval: float = 0.3,
        extractor: Extractor | None = None,
    ) -> None:
        """`extractor`: where pages are extracted (child processes with limits); None: in this process."""
        self.spec = spec
        self.extractor = extractor
        self.fetcher = fetcher
        self.store = store
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.progress = Progress()
        self.problems: list[str] = []   # what kept the crawl from pages (an unreadable robots.txt), for its status
        self._patterns: UrlPatterns | None = None
        self._seen: set[str] = set()
        self._documents: dict[str, bytes | None] = {}   # documents indexed (or kept) by this crawl -> content hash
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._hosts: set[str] = set()
        self._known: dict[str, KnownPage] = {}
        self._lastmod: dict[str, datetime] = {}
        # What the records in crawled_pages lead to, kept as this crawl writes them (a key's crawls never
        # overlap): a page's text goes only once no URL leads to its document.
        self._leads: dict[str, str] = {}            # URL -> document its record leads to
        self._holders: dict[str, set[str]] = {}     # document -> URLs whose records lead to it

    def _document(self, canonical: str, final: str, digest: bytes) -> str:
        """The document a page is indexed as: its canonical URL when that names the same page (the URL
        but for its query, or a page of the same content this crawl indexed), else its own URL. A
        canonical link is a hint: a theme that gives every page the home page's (a common slip) would
        otherwise index the first page read and hide all the others behind it, a different one each
        crawl."""
        if not canonical or canonical == final or site_of(canonical) not in self._hosts:
            return final
        if self._documents.get(canonical) == digest or _same_page(canonical, final):
            return canonical
        return final

    # --- what leads to a page's text -----------------------------------------------------------

    def _live(self, document: str) -> bool:
        """A URL's record leads to the document, or this crawl indexed (or kept) it."""
        return bool(self._holders.get(document)) or document in self._documents

    def _lead(self, url: str, document: str) -> tuple[list[str], str]:
        """Notes that the URL's record leads to `document` from now on ('': to nothing). Returns the
        documents whose text goes with that: its previous document when nothing else leads there (and the
        URL itself, a document of an older crawl, along with it, when nothing leads there either); and,
        when another URL still leads to the previous document, one of them, to take over the record's
        chunk count. Synchronous: no other page of the crawl runs between the look and the change."""
        previous = self._leads.pop(url, "")
        if document:
            self._leads[url] = document
            self._holders.setdefault(document, set()).add(url)
        if not previous or previous == document:
            return [], ""
        holders = self._holders.get(previous, set())
        holders.discard(url)
        if holders:
            return [], min(holders)
        self._holders.pop(previous, None)
        if previous in self._documents:
            return [], ""
        return [previous, *([url] if url != previous and not self._live(url) else [])], ""

    async def _bequeath(self, heir: str, known: KnownPage | None) -> None:
        if heir and known and known.chunk_count:
            await self.store.bequeath(heir, known.chunk_count, known.content_hash)
            if (kept := self._known.get(heir)) is not None:
                kept.chunk_count += known.chunk_count
                kept.content_hash = kept.content_hash or known.content_hash

    async def _drop(self, url: str, known: KnownPage, resp: Response | None = None,
                    links: list[str] | None = None) -> None:
        """The URL no longer leads to its page's text (gone, noindex, emptied, not text any more, disallowed,
        moved off the site): its record is deleted, or with `resp` keeps only its validators and links;
        the text goes only when no other URL leads to its document (a redirect's or a canonical link's
        other URLs keep it)."""
        gone, heir = self._lead(url, "")
        if not known.document and not self._live(url):
            gone = [url]    # a record that lost its document while its text stayed (an older crawl's)
        await self.store.drop(url, gone, resp, links)
        await self._bequeath(heir, known)
        self.progress.pages_removed += 1
        if gone:
            self.progress.chunks_deleted += known.chunk_count

    async def _extract(self, content_type: str, text: str, url: str) -> Page | None:
        """The page's content; None for a type that is not text."""
        if content_type not in (*HTML_TYPES, "text/plain"):
            return None
        if self.extractor is not None:
            return await self.extractor.page(content_type, text, url)
        return extract(content_type, text, url)

    # --- scope ---------------------------------------------------------------------------

    def in_scope(self, url: str) -> bool:
        """On one of the crawl's sites (host and port) and admitted by its patterns."""
        if site_of(url) not in self._hosts:
            return False
        if self._patterns is None:
            self._patterns = UrlPatterns(self.spec.include, self.spec.exclude, self.spec.job_id)
        return self._patterns.admits(url)

    def _admit(self, url: str, depth: int) -> None:
        if not url or url in self._seen or not self.in_scope(url):
            return
        if self.progress.pages_seen >= self.spec.max_pages:
            return
        self._seen.add(url)
        self.progress.pages_seen += 1
        self._queue.put_nowait((url, depth))

    # --- the job -------------------------------------------------------------------------

    async def run(self) -> Progress:
        # Patterns first: a request whose patterns are refused fails before anything is fetched.
        self._patterns = UrlPatterns(self.spec.include, self.spec.exclude, self.spec.job_id)
        seeds = [u for u in (normalize_url(s) for s in self.spec.seed_urls) if u]
        sitemap = normalize_url(self.spec.sitemap_url) if self.spec.sitemap_url else ""
        # The crawl's sites: those of its seeds and of the sitemap the tenant named, each a host and a
        # port (a sitemap named in robots.txt or in a sitemap index does not widen them).
        self._hosts = {site_of(u) for u in [*seeds, *([sitemap] if sitemap else [])]}
        self._known = await self.store.load()
        for url, known in self._known.items():
            if known.document:
                self._leads[url] = known.document
                self._holders.setdefault(known.document, set()).add(url)
        ticker = asyncio.create_task(self._tick()) if self.on_progress else None
        try:
            for url in seeds:
                self._admit(url, 0)
            sitemaps = [sitemap] if sitemap else []
            if not sitemaps:
                for origin in {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in seeds}:
                    rules = await self._robots(origin + "/")
                    sitemaps.extend(normalize_url(s) for s in (rules.sitemaps if rules else []))
            # Sitemaps first: their lastmod spares the requests for pages that have not changed.
            await self._read_sitemaps([s for s in sitemaps if s and site_of(s) in self._hosts])
            workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]
            try:
                await self._queue.join()
                # Pages an earlier crawl found that no link or sitemap leads to any more are asked
                # again, so that one removed since (404/410, noindex) leaves the knowledge. Not when the
                # crawl stopped at max_pages: the pages it did not reach are not known to be unlinked.
                if self.progress.pages_seen < self.spec.max_pages:
                    for url in self._known:
                        self._admit(url, self.spec.max_depth)
                    await self._queue.join()
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            if ticker:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        return self.progress        # the caller records the final progress with the job's state

    async def _robots(self, url: str):
        try:
            rules = await self.fetcher.robots(url)
        except BlockedAddress:
            return None
        await self._note_robots_problem(url)
        return rules

    async def _note_robots_problem(self, url: str) -> None:
        """An unreadable robots.txt keeps the crawl from its site (RFC 9309): said in the job's status."""
        problem = await self.fetcher.robots_problem(url)
        if problem and problem not in self.problems:
            self.problems.append(problem)
            logger.warning("job %s: %s; its pages are not fetched (counted as disallowed by robots.txt)",
                           self.spec.job_id, problem)

    async def _tick(self) -> None:
        last: dict | None = None
        while True:
            await asyncio.sleep(self.progress_interval)
            now = self.progress.as_dict()
            if now != last:
                last = now
                try:
                    await self.on_progress(self.progress)  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - progress is best effort; the final report is not
                    logger.exception("could not record progress of job %s", self.spec.job_id)

    async def _read_sitemaps(self, level: list[str]) -> None:
        """Sitemap indexes level by level, the sitemaps of one level fetched together."""
        done: set[str] = set()
        while level and len(done) < MAX_SITEMAPS:
            level = [u for u in dict.fromkeys(level) if u not in done][: MAX_SITEMAPS - len(done)]
            done.update(level)
            nested = await asyncio.gather(*(self._read_sitemap(u) for u in level))
            level = [n for found in nested for n in found]

    async def _read_sitemap(self, url: str) -> list[str]:
        """Admits the pages of one sitemap (noting their lastmod); returns the nested sitemaps it names
        on the crawl's sites. A sitemap that cannot be read counts as a failed page."""
        try:
            if not await self.fetcher.allowed(url):
                self.progress.pages_robots_skipped += 1
                await self._note_robots_problem(url)
                return []
            resp = await self.fetcher.get(url, accept=SITEMAP_ACCEPT, hosts=self._hosts, max_bytes=SITEMAP_MAX_BYTES)
            if resp.status != 200:
                raise FetchFailed(f"it answered HTTP {resp.status}")
            # Seconds of work for a sitemap of SITEMAP_MAX_BYTES (measured: 2.8 s to unzip and parse 56 MB,
            # 3.9 s more to normalise its URLs), kept off the event loop: the job's lease, Kafka and the
            # worker's other jobs run on it.
            pages, nested = await asyncio.to_thread(_sitemap_entries, resp.body, frozenset(self._hosts))
        except (FetchFailed, BlockedAddress, OSError, EOFError, ET.ParseError) as exc:
            self.progress.pages_failed += 1
            logger.warning("job %s: sitemap %s not read: %s", self.spec.job_id, url, exc)
            return []
        await self._admit_from_sitemap(pages)
        return nested

    async def _admit_from_sitemap(self, pages: list[tuple[str, datetime | None]]) -> None:
        """Admits a sitemap's pages (noting their lastmod) until the page budget is used; past it only the
        lastmod of a page already admitted is noted, when the sitemap names it as it was admitted (the rest
        are not normalised: 3.9 s for a sitemap of SITEMAP_MAX_BYTES). The loop is given back every
        SITEMAP_BATCH entries."""
        for n, (loc, lastmod) in enumerate(pages, start=1):
            if n % SITEMAP_BATCH == 0:
                await asyncio.sleep(0)
            if self.progress.pages_seen >= self.spec.max_pages:
                if lastmod and loc in self._seen:
                    self._lastmod[loc] = lastmod
                continue
            page = normalize_url(loc)
            if page and lastmod:
                self._lastmod[page] = lastmod
            self._admit(page, 0)

    async def _work(self) -> None:
        while True:
            url, depth = await self._queue.get()
            try:
                await self._page(url, depth)
            except Exception:  # noqa: BLE001 - one page never stops the job
                self.progress.pages_failed += 1
                logger.exception("job %s: page %s failed", self.spec.job_id, url)
            finally:
                self._queue.task_done()

    def _follow(self, links: list[str], depth: int) -> None:
        if depth < self.spec.max_depth:
            for link in links:
                self._admit(link, depth + 1)

    def _unchanged_per_sitemap(self, url: str, known: KnownPage) -> bool:
        lastmod = self._lastmod.get(url)
        if lastmod is None or known.fetched_at is None:
            return False
        now = datetime.now(timezone.utc)
        return lastmod < known.fetched_at - LASTMOD_SLACK and now - known.fetched_at < REVALIDATE_AFTER

    async def _page(self, url: str, depth: int) -> None:
        p = self.progress
        known = self._known.get(url)
        if not await self.fetcher.allowed(url):
            p.pages_robots_skipped += 1
            await self._note_robots_problem(url)
            # Newly disallowed: its text goes. Not while robots.txt cannot be read (it disallows all then).
            # A record that led to no text (a PDF's) has none to drop: no knowledge version to bump.
            if known and known.document and not await self.fetcher.robots_problem(url):
                await self._drop(url, known)
            return
        delay = min(await self.fetcher.crawl_delay(url), MAX_CRAWL_DELAY)
        gate = self.fetcher.gate(url)
        gate.delay = max(self.fetcher.host_delay, delay)   # the site's robots.txt as read now (the gate may be shared)
        if known and self._unchanged_per_sitemap(url, known):
            p.pages_unchanged += 1
            self._documents[known.document] = known.content_hash
            self._follow(known.links, depth)
            return
        headers = {}
        if known and known.etag:
            headers["If-None-Match"] = known.etag
        if known and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        try:
            resp = await self.fetcher.get(url, headers=headers, obey_robots=True, hosts=self._hosts)
        except (FetchFailed, BlockedAddress) as exc:
            await self._not_fetched(url, known, exc)
            return
        final = resp.url
        if final != url:
            if resp.redirects and not resp.permanent and known and known.document and final != known.document:
                # Redirected for now to another page (a maintenance page, a sign-in wall, often for every URL
                # of the site at once), whatever that page answers (a 404, noindex, JSON): what the URL led
                # to is kept, as through any transient error; the page it points to is crawled on its own.
                p.pages_failed += 1
                self._admit(final, depth)
                return
            self._seen.add(final)
        if resp.status == 304 and known:
            p.pages_unchanged += 1
            self._documents[known.document] = known.content_hash
            self._follow(known.links, depth)
            return
        if resp.status in (404, 410):
            if known:
                await self._drop(url, known)
            else:
                p.pages_failed += 1
            return
        if resp.status != 200:
            p.pages_failed += 1     # a transient or ambiguous error (401, 403, 429, 5xx) keeps what the page had
            return
        if site_of(final) not in self._hosts or (final != url and not await self.fetcher.allowed(final)):
            p.pages_skipped += 1
            return
        await self._content(url, depth, known, resp)

    async def _not_fetched(self, url: str, known: KnownPage | None, exc: FetchFailed | BlockedAddress) -> None:
        """A page that gave no response to read. Its text goes only when it moved off the site for good (a
        permanent redirect); a redirect loop, a timeout, a refused address or a size past the limit may
        pass, and keep it."""
        p = self.progress
        logger.info("job %s: %s", self.spec.job_id, exc)
        if not isinstance(exc, FetchFailed):
            p.pages_failed += 1
        elif exc.kind == "robots":
            p.pages_robots_skipped += 1     # a redirect to a page robots.txt disallows: not requested
        elif exc.kind == "off_site":
            p.pages_skipped += 1            # a redirect off the crawl's sites: not followed
            if known and exc.permanent:
                await self._drop(url, known)
        elif exc.kind == "too_large":
            p.pages_skipped += 1
            # Its validators let the next crawl skip it with a 304 instead of reading it again; a record
            # that leads to a page's text is kept as it is, so that the text can still go when the page does.
            if (exc.response is not None and (not known or not known.document)
                    and exc.response.headers.get("etag", "") != (known.etag if known else "")):
                await self.store.remember(url, exc.response, [])
        else:
            p.pages_failed += 1

    async def _content(self, url: str, depth: int, known: KnownPage | None, resp: Response) -> None:
        """A page that answered 200: extracted, then indexed, kept, or its text removed."""
        p = self.progress
        final = resp.url
        try:
            page = await self._extract(resp.content_type, resp.text, final)
        except ExtractionFailed as exc:
            # Past the extraction limits (time, memory) may pass: a page indexed before keeps its text.
            logger.warning("job %s: %s; page skipped", self.spec.job_id, exc)
            p.pages_skipped += 1
            if exc.reason == "unavailable":
                return      # nothing said of the page: not remembered, so the next crawl reads it again
            if not known or (not known.document and known.etag != resp.headers.get("etag", "")):
                await self.store.remember(url, resp, [])
            return
        if page is None:
            p.pages_skipped += 1    # binary and other types are never indexed
            if known and known.document:
                await self._drop(url, known, resp, [])      # it was text: what it said is gone
            elif not known or known.etag != resp.headers.get("etag", ""):
                await self.store.remember(url, resp, [])
            return
        header_noindex, header_nofollow = robots_directives(resp.headers.get("x-robots-tag", ""))
        page.noindex |= header_noindex
        if header_nofollow:
            page.links = []
        self._follow(page.links, depth)
        if page.noindex:
            p.pages_skipped += 1
            if known and known.document:
                await self._drop(url, known, resp, page.links)
            elif not known:
                await self.store.remember(url, resp, page.links)
            return
        digest = page.content_hash()
        document = self._document(page.canonical, final, digest)
        validators = (resp.headers.get("etag", ""), resp.headers.get("last-modified", ""))
        if document in self._documents:
            # Another URL of the same page (redirect, canonical) was indexed. One that led to another
            # document before (a page moved with a 301) lets it go: its text goes unless a URL leads there.
            moved = bool(known and known.document and known.document != document)
            gone, heir = self._lead(url, document)
            if gone:
                await self.store.remove(gone[-1], gone[0])
                p.chunks_deleted += known.chunk_count if known else 0
            await self._bequeath(heir, known)
            if moved:
                p.pages_removed += 1
            else:
                p.pages_unchanged += 1
            if not known or moved or (known.etag, known.last_modified) != validators:
                # Its validators let the next crawl ask this URL conditionally too.
                await self.store.remember(url, resp, page.links, known.content_hash if known and not moved else None,
                                          document, page.title)
            return
        if known and known.content_hash == digest and known.document == document:
            p.pages_unchanged += 1
            self._documents[document] = digest
            if (known.etag, known.last_modified) != validators:
                await self.store.remember(url, resp, page.links, digest, document, page.title)
            return
        chunks = chunk_page(page)
        if not chunks:
            p.pages_skipped += 1
            if known and known.document:
                # Emptied (a script shell, navigation only): what it said before is no longer on the site.
                await self._drop(url, known, resp, page.links)
            return
        # Set before the first await: another URL of this document, read meanwhile, is an alias of it.
        self._documents[document] = digest
        gone, heir = self._lead(url, document)
        written = await self.store.replace(url, document, gone[0] if gone else "", resp, page, chunks)
        await self._bequeath(heir, known)
        p.pages_fetched += 1
        p.chunks_written += written
        if known and (gone or known.document in ("", document)):
            p.chunks_deleted += known.chunk_count
