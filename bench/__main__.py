"""`make bench`: runs the scenarios against the real stack and prints/writes the results.

Scenario "chat": ResponseService.Chat through the full path (response -> search -> PostgreSQL,
event to Kafka) at several concurrencies, side by side with a bare grpc.aio echo RPC under the
same load in the same run, as the machine's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from bench.echo_server import METHOD
from bench.load import LoadResult, run_load
from services.cli import DEMO_DIR, add_knowledge_path, create_key
from services.common import db
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.common.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import REPO, Launcher

console = Console(width=140)
RESULTS = REPO / "bench" / "results"
QUESTIONS = [
    "How much does the Plus plan cost per year?",
    "How do I reset my password?",
    "Where are your data centers?",
    "What happens when two people edit the same file offline?",
    "Do you offer refunds?",
    "Which payment methods do you accept?",
    "Is there a desktop app for Linux?",
    "How long do deleted files stay in the trash?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = {
        "PARLEY_TOPIC_NAMESPACE": f".bench-{run}",
        "PARLEY_WORKER_APP_ID": f"parley-bench-{run}",
        "PARLEY_ADMIN_TOKEN": f"bench-{run}",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    for name in ("search", "response", "scraper", "analytics"):
        env[f"PARLEY_{name.upper()}_ADDR"] = f"127.0.0.1:{_free_port()}"
    for name in ("search", "response", "scraper", "analytics", "worker"):
        env[f"PARLEY_{name.upper()}_METRICS_PORT"] = str(_free_port())
    return env


async def chat_scenario(concurrencies: list[int], seconds: float) -> dict:
    env = bench_env()
    os.environ.update(env)
    settings = Settings()
    await db.migrate(settings.postgres_dsn)
    await create_all_topics(settings)
    state = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    launcher = Launcher(state, env=env)
    echo_port = _free_port()
    echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(echo_port)], cwd=REPO)
    launcher.start()
    results: list[LoadResult] = []
    try:
        console.print("starting the services ...")
        await launcher.wait_serving(settings)
        key = await create_key(settings, "Bench", f"bench-{uuid.uuid4().hex[:8]}")
        await add_knowledge_path(settings, key.key.id, DEMO_DIR)
        async with channel(settings.response_addr) as rch, grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ech:
            stub = response_pb2_grpc.ResponseServiceStub(rch)
            echo_call = ech.unary_unary(METHOD)
            payload = b"x" * 200

            async def chat(i: int):
                return await stub.Chat(
                    response_pb2.ChatRequest(product_key=key.product_key, session_id=f"b{i % 97}",
                                             message=QUESTIONS[i % len(QUESTIONS)]), timeout=30)

            async def echo_once(i: int):
                return await echo_call(payload, timeout=30)

            await chat(0)
            for c in concurrencies:
                for name, fn in (("echo", echo_once), ("chat", chat)):
                    console.print(f"  {name:5} concurrency {c:3} for {seconds:.0f}s ...")
                    results.append(await run_load(name, fn, c, seconds))
    finally:
        launcher.stop()
        echo.terminate()
        echo.wait(10)
    rows = []
    table = Table("concurrency", "chat req/s", "echo req/s", "chat/echo", "chat p50", "chat p95", "chat p99",
                  "echo p50", "echo p99", "errors", title="Chat (full path) vs bare grpc.aio echo, latency in ms")
    for c in concurrencies:
        ch = next(r for r in results if r.name == "chat" and r.concurrency == c)
        ec = next(r for r in results if r.name == "echo" and r.concurrency == c)
        ratio = ch.throughput / ec.throughput if ec.throughput else 0.0
        rows.append({"concurrency": c, "chat": ch.as_dict(), "echo": ec.as_dict(), "chat_over_echo": ratio})
        table.add_row(str(c), f"{ch.throughput:.0f}", f"{ec.throughput:.0f}", f"{ratio:.3f}",
                      f"{ch.p50_ms:.1f}", f"{ch.p95_ms:.1f}", f"{ch.p99_ms:.1f}",
                      f"{ec.p50_ms:.2f}", f"{ec.p99_ms:.2f}", str(ch.errors + ec.errors))
    console.print(table)
    return {"scenario": "chat", "seconds_per_level": seconds, "levels": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    report = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        "scenarios": [asyncio.run(chat_scenario(concurrencies, args.seconds))],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    console.print(f"results written to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
