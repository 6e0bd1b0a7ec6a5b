"""Scenario "chat": ResponseService.Chat through the full path (response -> search -> PostgreSQL,
event to Kafka) at several concurrencies, side by side with a bare grpc.aio echo RPC under the
same load in the same run, as the machine's ceiling."""

from __future__ import annotations

import subprocess
import sys

import grpc
from rich.table import Table

from bench.echo_server import METHOD
from bench.harness import QUESTIONS, console, free_port, started_services
from bench.load import LoadResult, run_load
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.launcher import REPO

NAME = "chat"


async def run(seconds: float, concurrencies: list[int]) -> dict:
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(echo_port)], cwd=REPO)
    results: list[LoadResult] = []
    try:
        async with started_services() as (settings, key_id, secret):
            async with channel(settings.response_addr) as rch, grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ech:
                stub = response_pb2_grpc.ResponseServiceStub(rch)
                echo_call = ech.unary_unary(METHOD)
                payload = b"x" * 200

                async def chat(i: int):
                    return await stub.Chat(
                        response_pb2.ChatRequest(product_key=secret, session_id=f"b{i % 97}",
                                                 message=QUESTIONS[i % len(QUESTIONS)]), timeout=30)

                async def echo_once(i: int):
                    return await echo_call(payload, timeout=30)

                await chat(0)
                for c in concurrencies:
                    for name, fn in (("echo", echo_once), ("chat", chat)):
                        console.print(f"  {name:5} concurrency {c:3} for {seconds:.0f}s ...")
                        results.append(await run_load(name, fn, c, seconds))
    finally:
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
    return {"scenario": NAME, "seconds_per_level": seconds, "levels": rows}
