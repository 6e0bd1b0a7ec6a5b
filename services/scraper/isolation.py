"""Pages extracted in processes of their own, bounded in time and memory.

Extraction is CPU work on markup a stranger wrote: a page shaped to hit a slow path, or a table whose
spans ask for gigabytes, would otherwise hold the event loop of the crawl worker or of the scraper API
(no lease renewed, no Kafka heartbeat, no RPC answered) or end the process, and the job's replay would
end it again. In a child process, such a page costs one page: the child is killed at the time limit,
fails its allocation at the memory limit, and the page is skipped.

The child is `python -m services.scraper.isolation`, spoken to over its stdin and stdout (pickles,
each after its length): unlike multiprocessing's spawn, it does not import the parent's main module."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import resource
import socket
import struct
import subprocess
import sys
from pathlib import Path

from prometheus_client import Counter

from services.scraper.encodings import looks_like_html
from services.scraper.extract import Page, extract_html, extract_text

logger = logging.getLogger(__name__)

PAGES_REFUSED = Counter("parley_scraper_extraction_refused_total",
                        "Pages not extracted: past the time or memory limit, or the extractor failed", ["reason"])

HTML_TYPES = ("text/html", "application/xhtml+xml")
# How long a new child may take to start (an interpreter and the extractor's imports), apart from
# the time limit of the page it is started for.
STARTUP_SECONDS = 60.0
START_ATTEMPTS = 3
START_RETRY_SECONDS = 0.1
_LENGTH = struct.Struct("!I")
_ROOT = Path(__file__).resolve().parents[2]     # where `services` is imported from


class ExtractionFailed(Exception):
    """The page was not extracted; `reason`: "time", "memory" or "error" (the extractor failed on it,
    or its process ended), all for what the page is; or "unavailable": no extracting process could be
    started (it could not be spawned, or it did not say it was ready), which says nothing of the page."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def extract(content_type: str, text: str, url: str) -> Page:
    """In this process: HTML (HTML_TYPES, or plain text that starts as an HTML document) or else plain text."""
    if content_type in HTML_TYPES or looks_like_html(text):
        return extract_html(text, url)
    return extract_text(text, url)


class _Child:
    """One extracting process, spoken to over a socket pair that is its stdin and stdout.

    It is spawned by `subprocess.Popen`, which starts a child with vfork and runs no fork handlers in
    it, not by the loop's `subprocess_exec`: uvloop's libuv forks, and in a child of a threaded gRPC
    process the handlers gRPC registers with pthread_atfork now and then ended it by SIGSEGV before
    it ran Python (a page answered "unavailable" for no fault of its own)."""

    def __init__(self, process: subprocess.Popen, replies: asyncio.StreamReader | None = None,
                 requests: asyncio.StreamWriter | None = None) -> None:
        self.process = process
        self.replies = replies
        self.requests = requests

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, memory_bytes: int) -> _Child:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        ours, its = socket.socketpair()
        with ours:
            with its:     # the child's end, held by the child alone once it is spawned
                process = subprocess.Popen([sys.executable, "-m", "services.scraper.isolation", str(memory_bytes)],
                                           stdin=its, stdout=its, env=env)
            child = cls(process)
            try:
                child.replies, child.requests = await asyncio.open_connection(sock=ours.dup())
                await asyncio.wait_for(child.receive(), STARTUP_SECONDS)     # ("ready",)
            except BaseException as exc:
                await asyncio.shield(child.kill())
                if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
                    raise ChildProcessError(f"it ended before it was ready (exit status {child.process.returncode})"
                                            ) from None
                raise
        return child

    async def call(self, *request) -> tuple:
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self.requests.write(_LENGTH.pack(len(payload)) + payload)
        await self.requests.drain()
        return await self.receive()

    async def receive(self) -> tuple:
        size, = _LENGTH.unpack(await self.replies.readexactly(_LENGTH.size))
        return pickle.loads(await self.replies.readexactly(size))   # noqa: S301 - our own child's reply

    async def kill(self) -> None:
        """Killed and reaped, its socket closed."""
        self.process.kill()
        await self.wait()
        if self.requests is not None:
            self.requests.close()

    async def wait(self) -> int:
        """Its exit status, once it has ended (negative: the signal that ended it)."""
        while (code := self.process.poll()) is None:
            await asyncio.sleep(0.01)
        return code


class Extractor:
    """`processes` children, each extracting one page at a time; a page waits for a free one, and its
    time limit runs from when a child takes it. Children start with the first page; one that passed a
    limit, or ended, is killed and replaced at the next page."""

    def __init__(self, *, processes: int = 1, seconds: float = 15.0, memory_bytes: int = 1 << 30) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._free: asyncio.Queue[_Child | None] = asyncio.Queue()
        for _ in range(max(1, processes)):
            self._free.put_nowait(None)
        self._children: set[_Child] = set()

    @classmethod
    def from_settings(cls, settings) -> Extractor:
        return cls(processes=settings.scraper_extract_processes, seconds=settings.scraper_extract_seconds,
                   memory_bytes=settings.scraper_extract_memory_mb << 20)

    async def page(self, content_type: str, text: str, url: str) -> Page:
        """The page's content (`content_type`: HTML or else plain text); ExtractionFailed past a limit."""
        child = await self._free.get()
        healthy = False
        try:
            if child is None:
                child = await self._start()
            try:
                reply = await asyncio.wait_for(child.call(content_type, text, url), self.seconds)
            except TimeoutError:
                reason, message = "time", f"extraction took more than {self.seconds:g} s"
            except (asyncio.IncompleteReadError, ConnectionError, OSError, EOFError, pickle.UnpicklingError):
                reason, message = "error", "the extracting process ended"
            else:
                if reply[0] == "ok":
                    healthy = True
                    return reply[1]
                reason, message = reply[0], reply[1]
                healthy = reason == "error"     # the extractor raised: the child is as good as before
            PAGES_REFUSED.labels(reason).inc()
            raise ExtractionFailed(reason, f"{url}: {message}")
        finally:
            if child is None or healthy:
                self._free.put_nowait(child)
            else:
                # On a page still (time limit, cancelled), out of memory or gone: a new child next time.
                # Shielded: a page cancelled (its job stopping) still leaves no child computing.
                self._children.discard(child)
                self._free.put_nowait(None)
                await asyncio.shield(child.kill())

    async def _start(self) -> _Child:
        """A new child; one that could not be spawned or ended before it was ready is tried again (a spawn
        can fail under a host's pressure), one that did not say it was ready in time is not."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                child = await _Child.start(self.memory_bytes)
                break
            except (TimeoutError, OSError, pickle.UnpicklingError) as exc:
                logger.warning("extracting process not started (attempt %d of %d): %r", attempt, START_ATTEMPTS, exc)
                if isinstance(exc, TimeoutError) or attempt == START_ATTEMPTS:
                    PAGES_REFUSED.labels("unavailable").inc()
                    raise ExtractionFailed("unavailable", f"no extracting process could be started ({exc!r})") from None
                await asyncio.sleep(START_RETRY_SECONDS * attempt)
        self._children.add(child)
        return child

    async def close(self) -> None:
        children, self._children = list(self._children), set()
        await asyncio.gather(*(child.kill() for child in children), return_exceptions=True)


def _serve(memory_bytes: int) -> None:
    """The child: pages in, contents out, until its stdin ends (the parent is gone)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr    # nothing else writes into the replies

    def send(reply: tuple) -> None:
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        replies.write(_LENGTH.pack(len(payload)) + payload)
        replies.flush()

    send(("ready",))
    while len(header := requests.read(_LENGTH.size)) == _LENGTH.size:
        size, = _LENGTH.unpack(header)
        try:
            page = extract(*pickle.loads(requests.read(size)))   # noqa: S301 - our parent's request
        except MemoryError:
            page = None
            send(("memory", f"extraction needed more than {memory_bytes >> 20} MiB"))
        except Exception as exc:  # noqa: BLE001 - one page's failure, said to the parent
            page = None
            send(("error", f"extraction failed: {type(exc).__name__}: {exc}"[:500]))
        if page is not None:
            send(("ok", page))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
