"""Serves the sample site on 127.0.0.1 with the cases a crawler must survive.

Static pages come from site/ with ETag and Last-Modified (304 on a conditional GET; .txt files get
Last-Modified only); the sitemaps give each page's lastmod. Generated on the fly: robots.txt (disallows /private/), a sitemap index with a
gzipped nested sitemap, a redirect loop, a 5 MB page, a binary file, a slow page, a 500, a 301, a
redirect to the cloud metadata address. Tests change or remove pages through `set_page`."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

SITE = Path(__file__).resolve().parent / "site"
BIG_BYTES = 5 * 1024 * 1024
_EPOCH = 1_767_225_600  # 2026-01-01: a stable Last-Modified for the committed pages
_TYPES = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


class SampleSite:
    """An aiohttp server of the sample site; `base_url` once started."""

    def __init__(self, *, slow_seconds: float = 1.5) -> None:
        self.slow_seconds = slow_seconds
        self.overrides: dict[str, bytes | None] = {}   # path -> new body, or None: gone (410)
        self.modified: dict[str, float] = {}
        self.hits: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0      # most requests served at once (per-host politeness)
        self.bytes_sent = 0
        self.statuses: list[tuple[str, int]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # --- changing the site (tests) -----------------------------------------------------

    def set_page(self, path: str, body: str | None) -> None:
        """Replace a page's HTML, or remove it (None: answers 410 Gone)."""
        self.overrides[path] = body.encode() if body is not None else None
        self.modified[path] = max(time.time(), self.modified.get(path, _EPOCH) + 1)

    def read_page(self, path: str) -> str:
        return (SITE / path.lstrip("/")).read_text()

    def reset(self) -> None:
        self.overrides.clear()
        self.modified.clear()
        self.hits.clear()
        self.statuses.clear()
        self.max_in_flight = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/sitemap.xml", self._sitemap_index)
        app.router.add_get("/sitemaps/help.xml.gz", self._sitemap_help)
        app.router.add_get("/sitemaps/blog.xml", self._sitemap_blog)
        app.router.add_get("/slow.html", self._slow)
        app.router.add_get("/error.html", self._error)
        app.router.add_get("/loop/a", self._redirect("/loop/b"))
        app.router.add_get("/loop/b", self._redirect("/loop/a"))
        app.router.add_get("/old-pricing.html", self._redirect("/help/plans.html", 301))
        app.router.add_get("/to-metadata", self._redirect("http://169.254.169.254/latest/meta-data/"))
        app.router.add_get("/big.html", self._big)
        app.router.add_get("/files/brochure.pdf", self._binary)
        app.router.add_get("/legacy/warranty.html", self._legacy)
        app.router.add_get("/{path:.*}", self._static)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.hits[request.path] += 1
        self.user_agents.add(request.headers.get("User-Agent", ""))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self.statuses.append((request.path, exc.status))
            raise
        finally:
            self.in_flight -= 1
        self.statuses.append((request.path, resp.status))
        if isinstance(resp, web.Response):
            self.bytes_sent += len(resp.body or b"") if isinstance(resp.body, bytes) else 0
        return resp

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(text=f"User-agent: *\nDisallow: /private/\n\nSitemap: {self.base_url}/sitemap.xml\n")

    async def _sitemap_index(self, request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            f"  <sitemap><loc>{self.base_url}/sitemaps/help.xml.gz</loc></sitemap>\n"
            f"  <sitemap><loc>{self.base_url}/sitemaps/blog.xml</loc></sitemap>\n"
            "</sitemapindex>\n"
        )
        return web.Response(text=body, content_type="application/xml")

    def _urlset(self, paths: list[str]) -> bytes:
        urls = "".join(
            f"  <url><loc>{self.base_url}{p}</loc><lastmod>{self._lastmod(p)}</lastmod></url>\n" for p in paths
        )
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                f"{urls}</urlset>\n").encode()

    def _lastmod(self, path: str) -> str:
        key = path + "index.html" if path.endswith("/") else path
        stamp = datetime.fromtimestamp(self.modified.get(key, _EPOCH), timezone.utc)
        return stamp.isoformat(timespec="seconds")

    async def _sitemap_help(self, request: web.Request) -> web.Response:
        paths = sorted(f"/help/{p.name}" for p in (SITE / "help").glob("*.html"))
        return web.Response(body=gzip.compress(self._urlset(paths), mtime=0), content_type="application/gzip")

    async def _sitemap_blog(self, request: web.Request) -> web.Response:
        paths = ["/blog/", *sorted(f"/blog/{p.name}" for p in (SITE / "blog").glob("*.html") if p.name != "index.html")]
        return web.Response(body=self._urlset(paths), content_type="application/xml")

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_seconds)
        return web.Response(text="<html><head><title>Slow page</title></head><body><main><h1>Patience</h1>"
                                 "<p>This page of the help centre answers slowly on purpose.</p></main></body></html>",
                            content_type="text/html")

    async def _error(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal server error")

    def _redirect(self, target: str, status: int = 302):
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": target})
        return handler

    async def _big(self, request: web.Request) -> web.StreamResponse:
        """5 MB of HTML, streamed (never committed); with validators like any static page."""
        validators = {"ETag": '"archive-1"', "Last-Modified": formatdate(_EPOCH, usegmt=True)}
        if request.headers.get("If-None-Match") == validators["ETag"]:
            return web.Response(status=304, headers=validators)
        resp = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8", **validators})
        await resp.prepare(request)
        await resp.write(b"<html><head><title>Archive</title></head><body><main>")
        block = (b"<p>" + b"All the news of every year, forever and ever. " * 20 + b"</p>\n") * 256
        sent = 0
        try:
            while sent < BIG_BYTES:
                await resp.write(block)
                sent += len(block)
                self.bytes_sent += len(block)
            await resp.write(b"</main></body></html>")
        except (ConnectionError, RuntimeError):
            return resp     # the client stopped reading at its size limit
        return resp

    async def _binary(self, request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"brochure-1"':
            return web.Response(status=304, headers={"ETag": '"brochure-1"'})
        body = b"%PDF-1.4\n" + bytes(range(256)) * 64
        return web.Response(body=body, content_type="application/pdf", headers={"ETag": '"brochure-1"'})

    async def _legacy(self, request: web.Request) -> web.Response:
        """A page of an older help site: windows-1252 bytes, said only by its <meta> (no charset in
        Content-Type), with curly quotes and a dash in 0x80-0x9F. Linked from nowhere."""
        body = ("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\">"
                "<title>Warranty \u2013 Caf\u00e9 Help</title></head><body><main><h1>Warranty</h1>"
                "<p>The \u201cCaf\u00e9 Pro\u201d grinder is covered for 24 months \u2013 parts and labour.</p>"
                "</main></body></html>").encode("cp1252")
        return web.Response(body=body, headers={"Content-Type": "text/html"})

    async def _static(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        if path.endswith("/"):
            path += "index.html"
        if path in self.overrides:
            body = self.overrides[path]
            if body is None:
                return web.Response(status=410, text="gone")
        else:
            file = (SITE / path.lstrip("/")).resolve()
            if SITE not in file.parents or not file.is_file():
                return web.Response(status=404, text="not found")
            body = file.read_bytes()
        suffix = Path(path).suffix
        ctype = _TYPES.get(suffix, "application/octet-stream")
        last_modified = formatdate(self.modified.get(path, _EPOCH), usegmt=True)
        headers = {"Content-Type": ctype, "Last-Modified": last_modified}
        if suffix != ".txt":
            headers["ETag"] = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if (inm and "ETag" in headers and inm == headers["ETag"]) or (not inm and ims and ims == last_modified):
            return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
        return web.Response(body=body, headers=headers)
