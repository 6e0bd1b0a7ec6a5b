"""Pages shaped to cost a crawl more than a page: a table whose spans repeat a long heading thousands
of times, thousands of nested content containers, a page that takes longer than its time limit or
more than its memory limit to read, and the process reading it killed. Each costs one page at most:
the extractor's child process (services/scraper/isolation.py) is killed or fails, the page is skipped,
and the next page is read by a new child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from services.scraper.extract import extract_html
from services.scraper.isolation import Extractor, ExtractionFailed

NORMAL = ("<html><head><title>Returns</title></head><body><main><h1>Returns</h1>"
          "<p>Unworn items can be returned within 30 days for a full refund.</p></main></body></html>")
# About 2 MB of cells that each span 100 columns: a grid of 24 million places to lay out.
SPANNING = "<table>" + "<tr><td colspan=100>x" * 120_000 + "</table>"


@contextlib.asynccontextmanager
async def extracting(**limits):
    extractor = Extractor(**limits)
    try:
        yield extractor
    finally:
        await extractor.close()


def test_a_table_whose_spans_repeat_a_long_heading_reads_within_a_bound_of_its_size():
    heading = "Plan " * 4000                          # 20 kB over 100 columns
    rows = "<tr><td>row<td colspan=50>x<td colspan=50>y" * 100
    html = f"<table><thead><tr><th colspan=100>{heading}</th></tr></thead>{rows}</table>"
    page = extract_html(html, "http://site.test/")
    # Each row reads its values with the heading once at most, and the table as a whole at most 20
    # times its text: every row's values are still there.
    assert len(page.text) <= 20 * len(html) + 10_000
    assert page.text.count("row") == 100


def test_a_short_table_still_reads_each_value_with_its_column_heading():
    html = ("<table><thead><tr><th>Plan</th><th>Price</th><th>Seats</th></tr></thead>"
            "<tr><td>Lite</td><td>9 €</td><td>1</td></tr><tr><td>Team</td><td>29 €</td><td>10</td></tr></table>")
    text = extract_html(html, "http://site.test/").text
    assert "Lite — Price: 9 €; Seats: 1" in text and "Team — Price: 29 €; Seats: 10" in text


async def test_thousands_of_nested_content_containers_are_read_within_the_time_limit():
    async with extracting(seconds=15) as extractor:
        page = await extractor.page("text/html", "<main>" * 20_000 + "<p>The warranty lasts two years.</p>",
                                    "http://site.test/")
        assert "The warranty lasts two years." in page.text
        page = await extractor.page("text/html", "<div>" + "<br><b>Step</b>" * 50_000 + "</div>", "http://site.test/")
        assert "Step" in page.text


async def test_a_page_past_the_time_limit_costs_that_page_and_the_next_one_is_read():
    async with extracting(seconds=0.5) as extractor:
        await extractor.page("text/html", NORMAL, "http://site.test/warm")
        first = next(iter(extractor._children))
        with pytest.raises(ExtractionFailed) as info:
            await extractor.page("text/html", SPANNING, "http://site.test/slow")
        assert info.value.reason == "time"
        assert await asyncio.wait_for(first.wait(), 5) == -signal.SIGKILL    # not left computing
        page = await extractor.page("text/html", NORMAL, "http://site.test/next")
        assert page.title == "Returns"


async def test_a_page_past_the_memory_limit_costs_that_page_and_the_next_one_is_read():
    async with extracting(seconds=60, memory_bytes=200 << 20) as extractor:    # the child alone takes about 60 MB
        with pytest.raises(ExtractionFailed) as info:
            await extractor.page("text/html", SPANNING, "http://site.test/big")
        assert info.value.reason == "memory"
        assert (await extractor.page("text/html", NORMAL, "http://site.test/next")).title == "Returns"


async def test_the_extracting_process_killed_mid_page_costs_that_page_only():
    async with extracting(seconds=60) as extractor:
        await extractor.page("text/html", NORMAL, "http://site.test/warm")
        child = next(iter(extractor._children))
        reading = asyncio.ensure_future(extractor.page("text/html", SPANNING, "http://site.test/slow"))
        await asyncio.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(ExtractionFailed) as info:
            await reading
        assert info.value.reason == "error"
        assert (await extractor.page("text/html", NORMAL, "http://site.test/next")).title == "Returns"


async def test_pages_wait_for_a_free_process_and_their_time_limit_starts_when_one_takes_them():
    async with extracting(processes=1, seconds=3) as extractor:
        pages = await asyncio.gather(*(extractor.page("text/html", NORMAL.replace("Returns", f"Page {i}"),
                                                      f"http://site.test/{i}") for i in range(20)))
        assert [p.title for p in pages] == [f"Page {i}" for i in range(20)]
        assert len(extractor._children) == 1


async def test_a_process_that_cannot_be_started_fails_as_unavailable_not_as_the_page_and_is_tried_again(
        monkeypatch, tmp_path):
    """No extracting process could be started (here the interpreter cannot be run; under a host's
    pressure a spawn can fail too): the page was a failure "error" or "time" before, the page's own, which
    Fetch answered INVALID_ARGUMENT and cached for every caller. It says nothing of the page: "unavailable",
    and the next page starts a process again."""
    from services.scraper import isolation

    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")       # starts, and ends before it says it is ready
    broken.chmod(0o755)
    async with extracting(seconds=60) as extractor:
        for executable in (str(tmp_path / "missing"), str(broken)):
            monkeypatch.setattr(isolation.sys, "executable", executable)
            with pytest.raises(ExtractionFailed) as info:
                await extractor.page("text/html", NORMAL, "http://site.test/a")
            assert info.value.reason == "unavailable", info.value
        monkeypatch.undo()
        assert (await extractor.page("text/html", NORMAL, "http://site.test/a")).title == "Returns"


async def test_a_process_that_ends_before_it_is_ready_is_started_again_for_the_same_page(
        monkeypatch, tmp_path, caplog):
    """A child that dies at its start (one died by SIGSEGV before it ran Python, when it was forked
    from the threaded gRPC process) says nothing of the page: a new one is started, and the page read."""
    from services.scraper import isolation

    once = tmp_path / "python"
    once.write_text(f"#!/bin/sh\nif [ ! -e {tmp_path}/crashed ]; then touch {tmp_path}/crashed; kill -SEGV $$; fi\n"
                    f'exec {isolation.sys.executable} "$@"\n')
    once.chmod(0o755)
    monkeypatch.setattr(isolation.sys, "executable", str(once))
    async with extracting(seconds=60) as extractor:
        assert (await extractor.page("text/html", NORMAL, "http://site.test/a")).title == "Returns"
    assert (tmp_path / "crashed").exists()
    assert f"exit status {-signal.SIGSEGV}" in caplog.text and "attempt 1 of 3" in caplog.text


# Run in a process of its own: a handler registered with pthread_atfork stays for the process's life.
_FORK_HANDLERS = """
import asyncio, ctypes, os, sys
import uvloop
from services.scraper.isolation import Extractor

mark = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)

@ctypes.CFUNCTYPE(None)
def in_child():
    libc.close(libc.open(mark.encode(), os.O_CREAT | os.O_WRONLY, 0o600))

assert libc.__register_atfork(None, None, in_child, None) == 0

async def read_one():
    extractor = Extractor(seconds=60)
    try:
        return (await extractor.page("text/html", sys.argv[2], "http://site.test/a")).title
    finally:
        await extractor.close()

title = uvloop.run(read_one())     # on uvloop, as the services run: its own spawn (libuv's) forks
spawned = os.path.exists(mark)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(title, spawned, os.path.exists(mark))
"""


async def test_the_process_is_spawned_without_forking_the_threaded_parent(tmp_path):
    """Handlers registered with pthread_atfork (gRPC registers some) run in a forked child; a child
    spawned with vfork and exec runs none. Here a handler that leaves a mark is registered (glibc's
    `__register_atfork`, which `pthread_atfork` calls): the extractor's child leaves none, a plain fork
    does."""
    from services.scraper import isolation

    proc = await asyncio.create_subprocess_exec(
        isolation.sys.executable, "-c", _FORK_HANDLERS, str(tmp_path / "forked"), NORMAL,
        stdout=asyncio.subprocess.PIPE, cwd=isolation._ROOT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert out.decode().split() == ["Returns", "False", "True"]     # no mark from the extractor's spawn
