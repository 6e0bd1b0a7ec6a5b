"""Scenario "response": the response service with Groq pointed at a local LLM server that answers in
a fixed 200 ms, side by side in one run:

- cached `Chat` (answer-cache hits) against a bare grpc.aio echo: throughput ratio and p50/p99;
- cache-miss overhead: `Chat` latency minus the LLM's 200 ms (every question new: Plan, routing,
  single-flight, the LLM call, cache write, event);
- time-to-first-chunk overhead of `ChatStream` over the LLM's first token (200 ms).
Goals: cached/echo >= 0.5 at concurrency 64; miss overhead p95 <= 15 ms; first-chunk overhead p95 <= 20 ms.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time

import grpc
from rich.table import Table

from bench.echo_server import METHOD
from bench.harness import QUESTIONS, console, free_port, started_services
from bench.load import LoadResult, quantile, run_load
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2, response_pb2_grpc
from services.launcher import REPO

NAME = "response"
LLM_MS = 200.0


class _Latencies:
    """Per-call values a scenario records itself (overheads), next to run_load's wall-clock latencies."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def summary(self) -> dict:
        ordered = sorted(self.values)
        return {"n": len(ordered), "p50": quantile(ordered, 0.5), "p95": quantile(ordered, 0.95),
                "p99": quantile(ordered, 0.99)}


async def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def run(seconds: float, concurrencies: list[int]) -> dict:
    echo_port, llm_port = free_port(), free_port()
    echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(echo_port)], cwd=REPO)
    llm = subprocess.Popen([sys.executable, "-m", "bench.fake_llm", str(llm_port), "--first-token-ms", str(LLM_MS)],
                           cwd=REPO)
    env = {
        "GROQ_API_KEY": "gsk_bench", "PARLEY_GROQ_BASE_URL": f"http://127.0.0.1:{llm_port}",
        # The bench measures the response path, not the per-key rate limit of search.
        "PARLEY_RATE_LIMIT_PER_SECOND": "1000000", "PARLEY_RATE_LIMIT_BURST": "1000000",
    }
    results: list[LoadResult] = []
    overheads: dict[tuple[str, int], _Latencies] = {}
    models: dict[str, int] = {}
    try:
        await _wait_port(llm_port)
        async with started_services(env) as (settings, key_id, secret):
            async with channel(settings.response_addr) as rch, grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ech:
                stub = response_pb2_grpc.ResponseServiceStub(rch)
                echo_call = ech.unary_unary(METHOD)
                payload = response_pb2.ChatRequest(message="x" * 200).SerializeToString()
                # Questions the key answers from its documents through the LLM (not FAQ, not no-answer).
                llm_questions = []
                for q in QUESTIONS:
                    reply = await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=q, no_cache=True),
                                            timeout=30)
                    if reply.model not in ("faq", "extractive"):
                        llm_questions.append(q)
                if not llm_questions:
                    raise SystemExit("no demo question is answered by the LLM; check the demo knowledge")
                counter = itertools.count()

                def new_question() -> str:
                    # Repeating one of the question's own words makes a new cache key with the same
                    # retrieval (same set of terms), so every call is a genuine miss.
                    n = next(counter)
                    q = llm_questions[n % len(llm_questions)]
                    words = [w for w in q.rstrip("?").split() if len(w) > 3] or ["plan"]
                    a, b = n // len(llm_questions) % 30, n // (len(llm_questions) * 30)
                    return f"{q} {' '.join([words[0]] * a)} {' '.join([words[-1]] * (b % 30))}".strip()

                async def cached(i: int):
                    reply = await stub.Chat(response_pb2.ChatRequest(
                        product_key=secret, session_id=f"b{i % 97}", message=QUESTIONS[i % len(QUESTIONS)]), timeout=30)
                    if reply.cache_status != common_pb2.CACHE_STATUS_HIT:
                        raise RuntimeError("not a cache hit")
                    return reply

                async def echo_once(i: int):
                    return await echo_call(payload, timeout=30)

                def miss_for(c: int):
                    sink = overheads.setdefault(("miss", c), _Latencies())

                    async def miss(i: int):
                        t0 = time.perf_counter()
                        reply = await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=new_question()),
                                                timeout=30)
                        elapsed = (time.perf_counter() - t0) * 1000
                        models[reply.model] = models.get(reply.model, 0) + 1
                        if reply.cache_status != common_pb2.CACHE_STATUS_MISS or reply.model in ("faq", "extractive"):
                            raise RuntimeError(f"not an LLM miss: {reply.model} {reply.cache_status}")
                        sink.values.append(elapsed - LLM_MS)
                    return miss

                def first_chunk_for(c: int):
                    sink = overheads.setdefault(("first_chunk", c), _Latencies())

                    async def first_chunk(i: int):
                        t0 = time.perf_counter()
                        call = stub.ChatStream(response_pb2.ChatRequest(product_key=secret, message=new_question()),
                                               timeout=30)
                        first = None
                        async for chunk in call:
                            if first is None:
                                first = (time.perf_counter() - t0) * 1000
                            if chunk.HasField("final") and chunk.final.model in ("faq", "extractive"):
                                raise RuntimeError("not answered by the LLM")
                        sink.values.append(first - LLM_MS)
                    return first_chunk

                for q in QUESTIONS:  # fill the cache
                    await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=q), timeout=30)
                for c in concurrencies:
                    for name, fn in (("echo", echo_once), ("cached", cached), ("miss", miss_for(c)),
                                     ("first_chunk", first_chunk_for(c))):
                        console.print(f"  {name:11} concurrency {c:3} for {seconds:.0f}s ...")
                        results.append(await run_load(name, fn, c, seconds))
    finally:
        for proc in (echo, llm):
            proc.terminate()
            proc.wait(10)

    def result(name: str, c: int) -> LoadResult:
        return next(r for r in results if r.name == name and r.concurrency == c)

    rows = []
    table = Table("concurrency", "cached req/s", "echo req/s", "cached/echo", "cached p50", "cached p99",
                  "echo p50", "echo p99", "miss ovh p50", "miss ovh p95", "1st chunk ovh p50", "1st chunk ovh p95",
                  "errors", title=f"Response: cached Chat vs bare echo; overheads over a {LLM_MS:.0f} ms LLM (ms)")
    for c in concurrencies:
        ca, ec = result("cached", c), result("echo", c)
        miss, first = overheads[("miss", c)].summary(), overheads[("first_chunk", c)].summary()
        ratio = ca.throughput / ec.throughput if ec.throughput else 0.0
        errors = sum(result(n, c).errors for n in ("cached", "echo", "miss", "first_chunk"))
        rows.append({"concurrency": c, "cached": ca.as_dict(), "echo": ec.as_dict(), "cached_over_echo": ratio,
                     "miss": result("miss", c).as_dict(), "miss_overhead_ms": miss,
                     "first_chunk": result("first_chunk", c).as_dict(), "first_chunk_overhead_ms": first,
                     "errors": errors})
        table.add_row(str(c), f"{ca.throughput:.0f}", f"{ec.throughput:.0f}", f"{ratio:.3f}", f"{ca.p50_ms:.2f}",
                      f"{ca.p99_ms:.2f}", f"{ec.p50_ms:.2f}", f"{ec.p99_ms:.2f}", f"{miss['p50']:.1f}",
                      f"{miss['p95']:.1f}", f"{first['p50']:.1f}", f"{first['p95']:.1f}", str(errors))
    console.print(table)
    console.print(f"LLM answers by model: {models}")
    console.print("goals: cached/echo >= 0.5 at concurrency 64; miss overhead p95 <= 15 ms; "
                  "first-chunk overhead p95 <= 20 ms")
    return {"scenario": NAME, "seconds_per_level": seconds, "llm_ms": LLM_MS, "levels": rows, "models": models}
