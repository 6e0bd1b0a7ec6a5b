"""The evaluation's help sites served on 127.0.0.1, and their question files (bench/eval/).

A site is a folder of HTML pages with a sitemap.xml whose URLs use the host placeholder `SITE`
(bench/eval/sites/<site>/); its questions are bench/eval/questions/<site>.json. The bundled sample
site (deploy/local/sample_site) is one more site, with the questions of bench/eval/sample_questions.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from services.launcher import REPO

EVAL_DIR = REPO / "bench" / "eval"
SAMPLE_QUESTIONS = EVAL_DIR / "sample_questions.json"
_TYPES = {".html": "text/html; charset=utf-8", ".xml": "application/xml", ".txt": "text/plain; charset=utf-8"}


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    kind: str                     # answerable | unanswerable | smalltalk
    pages: tuple[str, ...] = ()   # paths of the pages that answer it (any one is a hit)
    facts: tuple[str, ...] = ()   # alternatives: one of them must appear in the answer
    split: str = "dev"            # dev | test


@dataclass
class EvalSite:
    name: str
    questions: list[Question] = field(default_factory=list)
    root: Path | None = None      # None: the bundled sample site (served by its own server)


def load_questions(path: Path) -> list[Question]:
    data = json.loads(path.read_text())
    items = data["questions"] if isinstance(data, dict) else data
    return [Question(str(q["id"]), q["text"], q["kind"], tuple(q.get("pages") or ()), tuple(q.get("facts") or ()),
                     q.get("split") or _split(str(q["id"]))) for q in items]


def _split(question_id: str) -> str:
    """dev or test for an item that names none: a stable half by the hash of its id."""
    return "test" if hashlib.sha256(question_id.encode()).digest()[0] % 2 else "dev"


def discover(eval_dir: Path = EVAL_DIR) -> list[EvalSite]:
    """The sites that have both pages and questions, then the sample site."""
    sites = []
    for qfile in sorted((eval_dir / "questions").glob("*.json")):
        root = eval_dir / "sites" / qfile.stem
        if (root / "sitemap.xml").is_file():
            sites.append(EvalSite(qfile.stem, load_questions(qfile), root))
    if SAMPLE_QUESTIONS.is_file():
        sites.append(EvalSite("sample", load_questions(SAMPLE_QUESTIONS)))
    return sites


def page_key(url_or_path: str) -> str:
    """A page's path without scheme, host, query or index.html: how expected pages and sources meet."""
    path = re.sub(r"^[a-z]+://[^/]+", "", url_or_path.strip()).split("?")[0].split("#")[0]
    path = "/" + path.lstrip("/")
    return path.removesuffix("index.html")


class StaticSite:
    """Serves a site folder; `SITE` in sitemap.xml and robots.txt becomes the served base URL."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.match_info["path"] or "index.html"
        if path.endswith("/"):
            path += "index.html"
        file = (self.root / path).resolve()
        if self.root not in file.parents or not file.is_file():
            if path == "robots.txt":
                return web.Response(text=f"User-agent: *\nAllow: /\nSitemap: {self.base_url}/sitemap.xml\n")
            return web.Response(status=404, text="not found")
        body = file.read_bytes()
        if file.suffix in (".xml", ".txt"):
            body = re.sub(rb"(https?://)?\bSITE\b", self.base_url.encode(), body)
        return web.Response(body=body, headers={"Content-Type": _TYPES.get(file.suffix, "application/octet-stream")})
