"""`parley`: the operators' and analysts' command line (stack, services, keys, knowledge, chat, metrics)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.live import Live
from rich.table import Table

from aiokafka import AIOKafkaConsumer

from deploy.local import stack
from services.common import db
from services.common.admin import admin_metadata
from services.common.logs import configure_logging
from services.common.grpc_server import channel
from services.common.errors import InvalidArgument
from services.common.text import is_blank, storable
from services.common.pb.parley.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    events_pb2,
    response_pb2,
    response_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from services.settings import TOPICS, Settings, get_settings
from services.common.topics import create_all_topics
from services.launcher import COMPONENTS, REPO, Launcher
from services.search import knowledge

console = Console(stderr=True)
out = Console()
DEMO_DIR = REPO / "deploy" / "local" / "demo"
DEMO_QUESTIONS = [
    "Hi there!",
    "How can I get a new password? I forgot mine.",
    "How much does the Plus plan cost per year?",
    "What happens when two people edit the same file offline?",
    "Where are your data centers?",
    "Do you have a store in Paris that sells bicycles?",
    "Which Linux distributions does the desktop app run on?",   # answered from the crawled sample site
]
DEMO_SITE_PORT = 18088


class InputError(Exception):
    """Input the command cannot use (a missing or malformed file, an unknown topic): `main` prints it
    as one line on stderr and exits with status 2."""


def state_dir() -> Path:
    return Path(os.environ.get("PARLEY_LOCAL_DIR", REPO / ".local"))


def launcher() -> Launcher:
    return Launcher(state_dir())


def _admin_md(settings: Settings) -> tuple[tuple[str, str], ...]:
    return admin_metadata(settings.admin_token)


async def resumed(open_stream: Callable[[], grpc.aio.UnaryStreamCall], tries: int = 5) -> AsyncIterator:
    """The replies of a server stream, opened again when it ends UNAVAILABLE (its replica drains, or
    closes a connection past its age) instead of ending the command; `tries` failures in a row end it."""
    failures = 0
    while True:
        try:
            async for reply in open_stream():
                failures = 0
                yield reply
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= tries:
                raise
            failures += 1
            hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms", "")
            await asyncio.sleep(min(10.0, int(hint) / 1000 if hint.isdigit() else 1.0))


# --- stack and services ----------------------------------------------------------------------


def cmd_up(_args, settings: Settings) -> None:
    stack.up()
    asyncio.run(_migrate(settings))


async def _migrate(settings: Settings, topics: bool = True) -> None:
    applied = await db.migrate(settings.postgres_dsn)
    if not topics:
        console.print(f"[green]schema up to date[/] ({len(applied)} migration(s) applied)")
        return
    await create_all_topics(settings)
    console.print(f"[green]schema up to date[/] ({len(applied)} migration(s) applied); topics ready")


def cmd_migrate(args, settings: Settings) -> None:
    asyncio.run(_migrate(settings, topics=not args.schema_only))


def cmd_down(_args, _settings: Settings) -> None:
    stopped = launcher().stop()
    if stopped:
        console.print(f"stopped services: {', '.join(stopped)}")
    stack.down()


def cmd_services(args, settings: Settings) -> None:
    lr = launcher()
    if args.action == "start":
        started = lr.start()
        console.print(f"started: {', '.join(started) or 'nothing (all running)'}")
        asyncio.run(lr.wait_serving(settings))
        console.print("[green]all services SERVING[/]")
    elif args.action == "stop":
        console.print(f"stopped: {', '.join(lr.stop()) or 'nothing'}")
    else:
        for name in COMPONENTS:
            pid = lr.pid(name)
            console.print(f"{name:10} {'running (pid %d)' % pid if pid else 'stopped'}  log: {lr.log_file(name)}")


# --- keys and knowledge ----------------------------------------------------------------------


async def create_key(settings: Settings, name: str, key_id: str = "", instructions: str = "", website: str = "",
                     key_settings: search_pb2.KeySettings | None = None):
    async with channel(settings.search_addr) as ch:
        return await search_pb2_grpc.SearchServiceStub(ch).CreateProductKey(
            search_pb2.CreateProductKeyRequest(name=name, id=key_id, instructions=instructions, website=website,
                                               settings=key_settings),
            metadata=_admin_md(settings), timeout=10,
        )


def cmd_keys(args, settings: Settings) -> None:
    async def run():
        async with channel(settings.search_addr) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)
            if args.action == "create":
                reply = await stub.CreateProductKey(
                    search_pb2.CreateProductKeyRequest(name=args.name, id=args.id or "", website=args.website or ""),
                    metadata=_admin_md(settings), timeout=10,
                )
                out.print(f"id: {reply.key.id}\nproduct key (shown once): {reply.product_key}")
            elif args.action == "revoke":
                reply = await stub.RevokeProductKey(
                    search_pb2.RevokeProductKeyRequest(id=args.name), metadata=_admin_md(settings), timeout=10
                )
                out.print(f"revoked {reply.key.id}")
            elif args.action == "rotate":
                reply = await stub.RotateProductKey(
                    search_pb2.RotateProductKeyRequest(id=args.name), metadata=_admin_md(settings), timeout=10
                )
                out.print(f"id: {reply.key.id}\nnew product key (shown once; the old one no longer works): {reply.product_key}")
            else:
                reply = await stub.ListProductKeys(search_pb2.ListProductKeysRequest(), metadata=_admin_md(settings), timeout=10)
                table = Table("id", "name", "knowledge version", "revoked")
                for k in reply.keys:
                    table.add_row(k.id, k.name, str(k.knowledge_version), "yes" if k.revoked else "")
                out.print(table)

    asyncio.run(run())


KNOWLEDGE_SUFFIXES = (".json", ".md", ".txt")


def _read_text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{f}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{f}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{f}: cannot read it ({exc.strerror or exc})") from None


def _faq_entries(f: Path) -> list[search_pb2.AddFaqRequest]:
    """The FAQ entries of a .json file: {"faq": [{"question": "...", "answer": "..."}, ...]}."""
    try:
        data = json.loads(_read_text(f))
    except ValueError as exc:
        raise InputError(f"{f}: not valid JSON ({exc})") from None
    shape = 'an object {"faq": [{"question": "...", "answer": "..."}, ...]}'
    if not isinstance(data, dict) or not isinstance(data.get("faq"), list):
        raise InputError(f"{f}: expected {shape}")
    entries = []
    for i, entry in enumerate(data["faq"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("question"), str)
                and isinstance(entry.get("answer"), str)):
            raise InputError(f"{f}: faq entry {i} is not an object with a string question and answer; expected {shape}")
        try:   # what the search service would refuse, refused before any entry is sent
            knowledge.clean_text("the question", entry["question"], knowledge.MAX_QUESTION_CHARS)
            knowledge.clean_text("the answer", entry["answer"], knowledge.MAX_ANSWER_CHARS)
        except InvalidArgument as exc:
            raise InputError(f"{f}: faq entry {i}: {exc.message}") from None
        entries.append(search_pb2.AddFaqRequest(question=entry["question"], answer=entry["answer"]))
    return entries


def _document(f: Path) -> search_pb2.AddDocumentRequest:
    """A .md/.txt file as a document, titled by its first line that shows something."""
    text = _read_text(f)
    try:
        knowledge.clean_text("the document", text, knowledge.MAX_DOCUMENT_CHARS)
    except InvalidArgument as exc:
        raise InputError(f"{f}: {exc.message}") from None
    lines = (line.lstrip("# ").strip() for line in storable(text).splitlines())
    title = next((line for line in lines if not is_blank(line)), f.stem)
    if len(title) > knowledge.MAX_TITLE_CHARS:     # a plain text file's first paragraph
        title = title[:knowledge.MAX_TITLE_CHARS - 1].rstrip() + "…"
    return search_pb2.AddDocumentRequest(title=title, text=text, url=f"doc:{f.name}")


def read_knowledge(path: Path) -> list[tuple[Path, list[search_pb2.AddFaqRequest] | search_pb2.AddDocumentRequest]]:
    """Every knowledge file under `path`, read and checked before anything is sent (InputError)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in KNOWLEDGE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no {', '.join(KNOWLEDGE_SUFFIXES)} files in this directory")
    elif not path.exists():
        raise InputError(f"{path}: no such file or directory")
    elif path.suffix not in KNOWLEDGE_SUFFIXES:
        raise InputError(f"{path}: not a knowledge file (expected {', '.join(KNOWLEDGE_SUFFIXES)})")
    else:
        files = [path]
    return [(f, _faq_entries(f) if f.suffix == ".json" else _document(f)) for f in files]


async def add_knowledge_path(settings: Settings, key_id: str, path: Path) -> int:
    """Adds a .md/.txt file (a document) or a .json file ({"faq": [{question, answer}]}), or a directory of them."""
    files = read_knowledge(path)
    added = 0
    async with channel(settings.search_addr) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        for f, content in files:
            if isinstance(content, list):
                for entry in content:
                    entry.product_key_id = key_id
                    reply = await stub.AddFaq(entry, metadata=_admin_md(settings), timeout=10)
                    added += len(reply.chunk_ids)
            else:
                content.product_key_id = key_id
                reply = await stub.AddDocument(content, metadata=_admin_md(settings), timeout=30)
                added += len(reply.chunk_ids)
            console.print(f"  added {f.name}")
    return added


def cmd_knowledge(args, settings: Settings) -> None:
    n = asyncio.run(add_knowledge_path(settings, args.key, Path(args.path)))
    out.print(f"{n} new chunk(s) for {args.key}")


async def ingest(settings: Settings, key_id: str, url: str, *, sitemap: str = "", max_pages: int = 0,
                 max_depth: int = 0, include: list[str] | None = None, exclude: list[str] | None = None,
                 timeout: float = 3600) -> "scraper_pb2.CrawlStatus":
    """Crawls a site into a key's knowledge (StartCrawl, then WatchCrawl) with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc

    if not sitemap and url.endswith((".xml", ".xml.gz")):
        sitemap, url = url, ""
    async with channel(settings.scraper_addr) as ch:
        stub = scraper_pb2_grpc.ScraperServiceStub(ch)
        reply = await stub.StartCrawl(
            scraper_pb2.StartCrawlRequest(product_key_id=key_id, seed_urls=[url] if url else [], sitemap_url=sitemap,
                                          max_pages=max_pages, max_depth=max_depth, include=include or [],
                                          exclude=exclude or []),
            metadata=_admin_md(settings), timeout=10,
        )
        console.print(f"crawl [bold]{reply.job_id}[/] queued for {key_id}")
        last = scraper_pb2.CrawlStatus(job_id=reply.job_id, state="queued")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[detail]}"))
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("queued", total=None, detail="")
            watch = scraper_pb2.GetCrawlRequest(job_id=reply.job_id)
            async for s in resumed(lambda: stub.WatchCrawl(watch, metadata=_admin_md(settings), timeout=timeout)):
                done = (s.pages_fetched + s.pages_unchanged + s.pages_failed + s.pages_robots_skipped
                        + s.pages_skipped + s.pages_removed)
                bar.update(task, description=s.state, total=max(s.pages_seen, 1), completed=done,
                           detail=f"{s.pages_fetched} new/changed, {s.pages_unchanged} unchanged, {s.pages_failed} failed")
                last = s
        await _wait_indexed(settings, bar)
    out.print(
        f"{last.job_id}: {last.state}; {last.pages_fetched} page(s) new or changed, {last.pages_unchanged} unchanged, "
        f"{last.pages_failed} failed, {last.pages_robots_skipped} skipped by robots.txt, {last.pages_skipped} skipped "
        f"(noindex, type, size), {last.pages_removed} removed; {last.chunks_written} chunk(s) written, "
        f"{last.chunks_deleted} deleted" + (f"; error: {last.error}" if last.error else "")
    )
    return last


async def _wait_indexed(settings: Settings, bar, timeout: float = 3600) -> None:
    """The crawl hands pages to the search service's indexer: shows them being embedded and stored."""
    from services.search.indexer import lag

    left = await lag(settings)
    task = bar.add_task("indexing", total=max(left, 1), completed=0, detail="pages embedded and stored")
    first, deadline = left, asyncio.get_running_loop().time() + timeout
    while left > 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
        left = await lag(settings)
        first = max(first, left)
        bar.update(task, total=max(first, 1), completed=first - left)
    bar.update(task, description="indexed" if left == 0 else "indexing (still going)", completed=first - left)


def cmd_ingest(args, settings: Settings) -> None:
    status = asyncio.run(ingest(settings, args.key, args.url, sitemap=args.sitemap or "", max_pages=args.max_pages,
                                max_depth=args.max_depth, include=args.include, exclude=args.exclude))
    if status.state != "done":
        raise SystemExit(1)


async def cancel_crawl(settings: Settings, job_id: str) -> str:
    from services.common.pb.parley.v1 import scraper_pb2, scraper_pb2_grpc

    async with channel(settings.scraper_addr) as ch:
        status = await scraper_pb2_grpc.ScraperServiceStub(ch).CancelCrawl(
            scraper_pb2.GetCrawlRequest(job_id=job_id), metadata=_admin_md(settings), timeout=10)
    return status.state


def cmd_cancel_crawl(args, settings: Settings) -> None:
    state = asyncio.run(cancel_crawl(settings, args.job_id))
    out.print(f"{args.job_id}: {state}")


# --- chat, metrics, events -------------------------------------------------------------------


def print_answer(question: str, reply: response_pb2.ChatResponse) -> None:
    strategy = common_pb2.Strategy.Name(reply.strategy).removeprefix("STRATEGY_")
    out.print(f"\n[bold cyan]Q:[/] {question}")
    out.print(f"[bold green]A:[/] {reply.answer}")
    out.print(
        f"   [dim]strategy={strategy} model={reply.model} total={reply.timings.total_ms:.1f} ms "
        f"search={reply.timings.search_ms:.1f} ms[/]"
    )
    for s in reply.sources:
        out.print(f"   [dim]source [{s.id}] {s.kind}: {s.title[:70]} (score {s.score:.3f})[/]")


def cmd_chat(args, settings: Settings) -> None:
    async def run():
        async with channel(settings.response_addr) as ch:
            reply = await response_pb2_grpc.ResponseServiceStub(ch).Chat(
                response_pb2.ChatRequest(product_key=args.key, session_id=args.session, message=args.message), timeout=10
            )
        print_answer(args.message, reply)

    asyncio.run(run())


async def fetch_metrics(settings: Settings, key_id: str) -> analytics_pb2.GetMetricsResponse:
    async with channel(settings.analytics_addr) as ch:
        return await analytics_pb2_grpc.AnalyticsServiceStub(ch).GetMetrics(
            analytics_pb2.GetMetricsRequest(product_key_id=key_id, group_by=analytics_pb2.GROUP_BY_STRATEGY),
            metadata=_admin_md(settings), timeout=10,
        )


def metrics_table(key_id: str, reply: analytics_pb2.GetMetricsResponse) -> Table:
    table = Table("strategy", "turns", "cache hits", "errors", "no answer", "p50 ms", "p95 ms", "p99 ms",
                  title=f"metrics for {key_id}, last hour (latency to the bucket's upper bound)")
    for p in [*reply.points, reply.total]:
        table.add_row(
            p.group or "[bold]all[/]", str(p.turns), str(p.cache_hits), str(p.errors), str(p.no_answers),
            f"{p.total_ms.p50:.1f}", f"{p.total_ms.p95:.1f}", f"{p.total_ms.p99:.1f}",
        )
    return table


def cmd_metrics(args, settings: Settings) -> None:
    if not args.watch:
        out.print(metrics_table(args.key, asyncio.run(fetch_metrics(settings, args.key))))
        return

    async def watch():
        async with channel(settings.analytics_addr) as ch:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(ch)
            request = analytics_pb2.StreamMetricsRequest(product_key_id=args.key, interval_seconds=2)
            with Live(console=out, auto_refresh=False) as live:
                async for reply in resumed(lambda: stub.StreamMetrics(request, metadata=_admin_md(settings))):
                    table = Table("minute", "turns", "cache hits", "errors", "no answer", "p50 ms", "p95 ms", "p99 ms",
                                  title=f"live metrics for {args.key} (Ctrl-C to stop)")
                    for p in [*reply.points[-15:], reply.total]:
                        label = p.bucket_start.ToDatetime().strftime("%H:%M") if p is not reply.total else "last hour"
                        table.add_row(label, str(p.turns), str(p.cache_hits), str(p.errors), str(p.no_answers),
                                      f"{p.total_ms.p50:.1f}", f"{p.total_ms.p95:.1f}", f"{p.total_ms.p99:.1f}")
                    live.update(table, refresh=True)

    asyncio.run(watch())


_EVENT_TYPES = {
    "chat_turns": events_pb2.ChatTurn,
    "feedback": events_pb2.Feedback,
    "crawl_requests": events_pb2.CrawlRequested,
    "knowledge_updated": events_pb2.KnowledgeUpdated,
}


def decode_event(topic: str, settings: Settings, value: bytes) -> dict:
    for name, cls in _EVENT_TYPES.items():
        if topic == settings.topic(name):
            msg = cls()
            msg.ParseFromString(value)
            return MessageToDict(msg, preserving_proto_field_name=True)
    try:
        return json.loads(value)
    except ValueError:
        return {"raw": value.hex()}


def cmd_events(args, settings: Settings) -> None:
    topic = settings.topic(args.topic) if args.topic in TOPICS else args.topic

    async def run():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=None,
            auto_offset_reset="earliest" if args.from_beginning else "latest", enable_auto_commit=False,
        )
        await consumer.start()
        seen = 0
        try:
            # Asked before subscribing: a subscription to a missing topic waits for it forever (or,
            # where the brokers create topics on demand, creates it).
            if topic not in await consumer.topics():
                raise InputError(f"no topic {topic!r} in the cluster at {settings.kafka_bootstrap} "
                                 f"(parley's topics: {', '.join(TOPICS)})")
            consumer.subscribe([topic])
            async for msg in consumer:
                try:
                    value = decode_event(topic, settings, msg.value)
                except Exception as exc:  # noqa: BLE001 - show undecodable values, do not stop
                    value = {"undecodable": str(exc), "raw": msg.value.hex() if msg.value else ""}
                line = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                        "key": msg.key.decode(errors="replace") if msg.key else None,
                        "headers": {k: v.decode(errors="replace") for k, v in msg.headers}, "value": value}
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
                seen += 1
                if args.limit and seen >= args.limit:
                    return
        finally:
            await consumer.stop()

    asyncio.run(run())


# --- the demo ---------------------------------------------------------------------------------


async def load_demo(settings: Settings) -> tuple[str, str]:
    """Creates the demo product key with the bundled knowledge; reuses it when it exists. (key id, secret)"""
    saved = state_dir() / "demo-key.json"
    if saved.exists():
        data = json.loads(saved.read_text())
        async with channel(settings.search_addr) as ch:
            try:
                await search_pb2_grpc.SearchServiceStub(ch).Plan(
                    search_pb2.PlanRequest(product_key=data["secret"], message="hello"), timeout=5
                )
                return data["id"], data["secret"]
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
    spec = json.loads((DEMO_DIR / "faq.json").read_text())
    key = spec["key"]
    key_id = key["id"]
    try:
        reply = await create_key(settings, key["name"], key_id, key["instructions"], key["website"])
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        # The key exists from an earlier run whose secret is lost: make a fresh one.
        key_id = f"{key_id}-{os.urandom(3).hex()}"
        reply = await create_key(settings, key["name"], key_id, key["instructions"], key["website"])
    console.print(f"created demo product key [bold]{reply.key.id}[/]")
    await add_knowledge_path(settings, reply.key.id, DEMO_DIR)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"id": reply.key.id, "secret": reply.product_key}))
    saved.chmod(0o600)
    return reply.key.id, reply.product_key


async def crawl_demo_site(settings: Settings, key_id: str) -> None:
    """Serves the bundled sample site on 127.0.0.1 and crawls it into the demo key (incremental on a re-run)."""
    from deploy.local.sample_site.server import SampleSite

    site = SampleSite(slow_seconds=0.5)
    try:
        try:
            base = await site.start(port=DEMO_SITE_PORT)
        except OSError:
            base = await site.start()
        console.print(f"crawling the sample site {base} into {key_id} ...")
        await ingest(settings, key_id, base + "/", sitemap=base + "/sitemap.xml", max_pages=200, timeout=300)
    except grpc.aio.AioRpcError as exc:
        console.print(f"[yellow]the sample site was not crawled[/]: {exc.code().name}: {exc.details()}")
    finally:
        await site.stop()


async def demo(settings: Settings) -> None:
    key_id, secret = await load_demo(settings)
    await crawl_demo_site(settings, key_id)
    before = (await fetch_metrics(settings, key_id)).total.turns
    async with channel(settings.response_addr) as ch:
        stub = response_pb2_grpc.ResponseServiceStub(ch)
        for q in DEMO_QUESTIONS:
            reply = await stub.Chat(response_pb2.ChatRequest(product_key=secret, session_id="demo", message=q), timeout=10)
            print_answer(q, reply)
    console.print("\nwaiting for the stream processor to count the turns ...")
    reply = await fetch_metrics(settings, key_id)
    waited = 0.0
    while reply.total.turns < before + len(DEMO_QUESTIONS) and waited < 90:
        await asyncio.sleep(0.2)  # a worker that just joined its group may wait out a dead member's session
        waited += 0.2
        reply = await fetch_metrics(settings, key_id)
    if reply.total.turns < before + len(DEMO_QUESTIONS):
        console.print(f"[yellow]the worker has not counted every turn yet; see {launcher().log_file('worker')}[/]")
    out.print()
    out.print(metrics_table(key_id, reply))
    out.print(f"\ndemo product key id: {key_id}\nsecret: {secret}\n"
              f"try: .venv/bin/parley chat --key {secret} 'How do I share a folder?'")


def cmd_run(args, settings: Settings) -> None:
    # The demo crawls the bundled sample site on 127.0.0.1, which the scraper refuses unless allow-listed.
    os.environ.setdefault("PARLEY_SCRAPER_ALLOW_NETWORKS", "127.0.0.1/32")
    os.environ.setdefault("PARLEY_SCRAPER_HOST_DELAY_SECONDS", "0.02")
    lr = launcher()
    cmd_up(args, settings)
    started = lr.start()
    console.print(f"services started: {', '.join(started) or 'all were running'}; logs in {lr.log_dir}")
    try:
        asyncio.run(lr.wait_serving(settings))
        asyncio.run(demo(settings))
    finally:
        if args.stop:
            cmd_down(args, settings)
    if not args.stop:
        console.print(f"\n[green]Parley is running[/]: response {settings.response_addr}, search {settings.search_addr}, "
                      f"scraper {settings.scraper_addr}, analytics {settings.analytics_addr}. Stop with `make down`.")


def cmd_bench(args, _settings: Settings) -> None:
    from bench.__main__ import main as bench_main

    bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local stack (Kafka, PostgreSQL, Redis) and migrate").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the services and the local stack").set_defaults(fn=cmd_down)
    p = sub.add_parser("migrate", help="apply schema migrations and create topics")
    p.add_argument("--schema-only", action="store_true",
                   help="PostgreSQL only, without Kafka (where the topics are declared apart, as in Kubernetes)")
    p.set_defaults(fn=cmd_migrate)
    p = sub.add_parser("services", help="start/stop/status of the local service processes")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(fn=cmd_services)
    p = sub.add_parser("keys", help="product keys (admin)")
    p.add_argument("action", choices=["create", "list", "rotate", "revoke"])
    p.add_argument("name", nargs="?", default="", help="name (create) or id (rotate, revoke)")
    p.add_argument("--id", help="public id for create")
    p.add_argument("--website")
    p.set_defaults(fn=cmd_keys)
    p = sub.add_parser("knowledge", help="add knowledge files (admin)")
    p.add_argument("action", choices=["add"])
    p.add_argument("path")
    p.add_argument("--key", required=True, help="product key id")
    p.set_defaults(fn=cmd_knowledge)
    p = sub.add_parser("ingest", help="crawl a website (or a sitemap URL) into a key's knowledge, with progress")
    p.add_argument("url", help="a seed URL, or a sitemap (.xml / .xml.gz)")
    p.add_argument("--key", required=True, help="product key id")
    p.add_argument("--sitemap", help="a sitemap URL besides the seed")
    p.add_argument("--max-pages", type=int, default=0, help="default 100")
    p.add_argument("--max-depth", type=int, default=0, help="default 3")
    p.add_argument("--include", action="append", default=[], help="regular expression URLs must match (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="regular expression of URLs to leave out (repeatable)")
    p.set_defaults(fn=cmd_ingest)
    p = sub.add_parser("cancel-crawl", help="stop a crawl job (pages already crawled stay)")
    p.add_argument("job_id")
    p.set_defaults(fn=cmd_cancel_crawl)
    p = sub.add_parser("chat", help="ask one question")
    p.add_argument("message")
    p.add_argument("--key", required=True, help="the product key (secret)")
    p.add_argument("--session", default="cli")
    p.set_defaults(fn=cmd_chat)
    p = sub.add_parser("metrics", help="metrics of a key, last hour")
    p.add_argument("--key", required=True, help="product key id")
    p.add_argument("--watch", action="store_true", help="a live table, updated every 2 s")
    p.set_defaults(fn=cmd_metrics)
    p = sub.add_parser("events", help="decode a topic to JSON lines")
    p.add_argument("action", choices=["tail"])
    p.add_argument("topic", help="a topic name or one of: " + ", ".join(TOPICS))
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(fn=cmd_events)
    p = sub.add_parser("run", help="start everything and run the demo")
    p.add_argument("--stop", action="store_true", help="stop everything after the demo")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("bench", help="run the benchmarks")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings(Settings)
    configure_logging("WARNING", json=False)
    try:
        args.fn(args, settings)
    except InputError as exc:
        sys.stderr.write(f"parley {args.command}: {' '.join(str(exc).splitlines())}\n")
        raise SystemExit(2) from None
    except grpc.aio.AioRpcError as exc:
        console.print(f"[red]{exc.code().name}[/]: {exc.details()}")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
