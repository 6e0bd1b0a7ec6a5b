"""Scenario "chat": cached ResponseService.Chat through the full path, side by side with a bare
grpc.aio echo of the same method, both called by ghz (a separate Go process, the method found by
server reflection) with the same requests, at each concurrency in turn.

Beside them, to show what each choice is worth in the same run: the echo served through the
services' bootstrap (interceptor, gate, health), and the response service and the echo on the
standard asyncio loop instead of uvloop (a second response process sharing the stack).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from bench.harness import QUESTIONS, console, free_port, pid_listening_on, started_services
from bench.load import LoadResult, ghz_path, run_ghz
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.common.redis_batch import AutoPipeline
from services.common.redis_client import create_redis
from services.launcher import REPO

NAME = "chat"
# Every target at every concurrency, ROUNDS times over: figures are medians over the rounds, and
# each ratio is the median of the ratios measured side by side within a round.
ROUNDS = 3
CALL = "parley.v1.ResponseService.Chat"
# name -> what it is; "chat" / "echo" is the goal's ratio.
TARGETS = {
    "echo": "bare grpc.aio echo, uvloop",
    "chat": "response service (cached answers), uvloop",
    "echo_bootstrap": "echo through the services' bootstrap, uvloop",
    "echo_asyncio": "bare echo, standard asyncio loop",
    "chat_asyncio": "response service, standard asyncio loop",
}


def _process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _serving(addr: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with grpc.aio.insecure_channel(addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise RuntimeError(f"{addr} did not become SERVING in {timeout:.0f}s")
            await asyncio.sleep(0.2)


async def _echo_ready(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        await asyncio.wait_for(ch.channel_ready(), 30)


def _start_sidecars(stack: ExitStack) -> dict[str, str]:
    """The echo variants and the response service on the standard loop: name -> address."""
    addrs = {}
    for name, args in (("echo", ["--mode", "bare", "--loop", "uvloop"]),
                       ("echo_bootstrap", ["--mode", "bootstrap", "--loop", "uvloop"]),
                       ("echo_asyncio", ["--mode", "bare", "--loop", "asyncio"])):
        port = free_port()
        proc = _process(["-m", "bench.echo_server", str(port), *args])
        stack.callback(_stop, proc)
        addrs[name] = f"127.0.0.1:{port}"
    addrs["chat_asyncio"] = f"127.0.0.1:{free_port()}"
    proc = _process(["-m", "services.response"], {"PARLEY_RESPONSE_ADDR": addrs["chat_asyncio"],
                                                  "PARLEY_RESPONSE_METRICS_PORT": str(free_port()),
                                                  "PARLEY_EVENT_LOOP": "asyncio"})
    stack.callback(_stop, proc)
    return addrs


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run(seconds: float, concurrencies: list[int]) -> dict:
    ghz_path()
    results: list[list[LoadResult]] = []  # one list per round
    with ExitStack() as stack:
        async with started_services() as (settings, key_id, secret):
            addrs = {"chat": settings.response_addr, **_start_sidecars(stack)}
            await _serving(addrs["chat_asyncio"])
            await _serving(addrs["echo_bootstrap"])
            await _echo_ready(addrs["echo"])
            await _echo_ready(addrs["echo_asyncio"])
            pids = {name: pid_listening_on(addr) for name, addr in addrs.items()}
            requests = [{"product_key": secret, "session_id": "bench-{{.WorkerID}}", "message": q} for q in QUESTIONS]
            async with channel(settings.response_addr) as rch:  # answer every question once: the cache is warm
                stub = response_pb2_grpc.ResponseServiceStub(rch)
                for q in QUESTIONS:
                    await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=q), timeout=30)
            for round_no in range(1, ROUNDS + 1):
                results.append([])
                for c in concurrencies:
                    console.print(f"  round {round_no}/{ROUNDS}, concurrency {c:3}: {', '.join(TARGETS)}, "
                                  f"{seconds:.0f}s each (ghz) ...")
                    for name in TARGETS:
                        results[-1].append(await run_ghz(name, addrs[name], CALL, requests, c, seconds,
                                                         server_pid=pids[name]))
            redis_rows = [await _redis_round_trips(settings.redis_url, c) for c in concurrencies]
    report = _report(results, seconds, concurrencies)
    _report_redis(redis_rows)
    return {**report, "hit_lookup_redis": redis_rows}


# The answer lookup of a cache hit (the response service's Lua script, same shape of keys).
_LOOKUP = "local p = redis.call('GET', KEYS[1]) if not p then return {false, false} end return {p, redis.call('GET', ARGV[1])}"


async def _redis_round_trips(url: str, concurrency: int, rounds: int = 200) -> dict:
    """`concurrency` turns each doing one lookup script, `rounds` times: one EVALSHA per turn, or
    the turns' lookups sent together by AutoPipeline. CPU of this process per lookup, and wall time."""
    client = create_redis(url)
    script = client.register_script(_LOOKUP)
    batch = AutoPipeline(client)
    await client.set("bench:ptr", b"k 1")
    await client.set("bench:ans", b"x" * 500)
    ways = {"one_evalsha_per_turn": lambda: script(keys=["bench:ptr"], args=["bench:ans"]),
            "auto_pipeline": lambda: batch.evalsha(script, ["bench:ptr"], ["bench:ans"])}
    row: dict = {"concurrency": concurrency}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(3):  # interleaved repeats; medians reported
        for name, lookup in ways.items():
            await lookup()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                await asyncio.gather(*(lookup() for _ in range(concurrency)))
            n = rounds * concurrency
            samples[name].append(((time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6))
    for name, runs in samples.items():
        row[name] = {"cpu_us": statistics.median(r[0] for r in runs), "wall_us": statistics.median(r[1] for r in runs)}
    await client.aclose()
    return row


def _report_redis(rows: list[dict]) -> None:
    table = Table("conc.", "one EVALSHA per turn\nCPU µs / wall µs", "auto-pipelined\nCPU µs / wall µs",
                  title="Hit-path Redis lookup, per lookup, client side (in-process)")
    for row in rows:
        one, auto = row["one_evalsha_per_turn"], row["auto_pipeline"]
        table.add_row(str(row["concurrency"]), f"{one['cpu_us']:.0f} / {one['wall_us']:.0f}",
                      f"{auto['cpu_us']:.0f} / {auto['wall_us']:.0f}")
    console.print(table)


def _report(results: list[list[LoadResult]], seconds: float, concurrencies: list[int]) -> dict:
    def median_of(c: int, value) -> float:
        """Median over the rounds of value({target: result}) at concurrency c."""
        return statistics.median(value({r.name: r for r in round_ if r.concurrency == c}) for round_ in results)

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    ratio_defs = {
        "chat_over_echo": lambda by: ratio(by["chat"].throughput, by["echo"].throughput),
        "chat_asyncio_over_echo_asyncio": lambda by: ratio(by["chat_asyncio"].throughput, by["echo_asyncio"].throughput),
        "echo_bootstrap_over_echo": lambda by: ratio(by["echo_bootstrap"].throughput, by["echo"].throughput),
        "chat_uvloop_over_asyncio": lambda by: ratio(by["chat"].throughput, by["chat_asyncio"].throughput),
        "echo_cpu_over_chat_cpu": lambda by: ratio(by["echo"].server_cpu_us, by["chat"].server_cpu_us),
    }
    table = Table("conc.", *(f"{n}\nreq/s" for n in TARGETS), "chat/\necho", "chat_asyncio/\necho_asyncio",
                  "echo_bootstrap/\necho", "chat p50/p99", "echo p50/p99", "errors",
                  title=f"Cached Chat vs bare echo of the same method, both driven by ghz; medians of {len(results)} "
                        "rounds; latency in ms")
    cpu = Table("conc.", *TARGETS, "echo/chat", title="Server CPU time per call (µs, medians): less sensitive than req/s to "
                                                      "the machine's other load")
    rows = []
    for c in concurrencies:
        rps = {n: median_of(c, lambda by, n=n: by[n].throughput) for n in TARGETS}
        cpu_us = {n: median_of(c, lambda by, n=n: by[n].server_cpu_us) for n in TARGETS}
        lat = {n: (median_of(c, lambda by, n=n: by[n].p50_ms), median_of(c, lambda by, n=n: by[n].p99_ms))
               for n in ("chat", "echo")}
        ratios = {name: median_of(c, fn) for name, fn in ratio_defs.items()}
        errors = sum(r.errors for round_ in results for r in round_ if r.concurrency == c)
        rows.append({"concurrency": c, "req_per_s": rps, "server_cpu_us": cpu_us, "p50_p99_ms": lat,
                     "errors": errors, **ratios,
                     "rounds": [[r.as_dict() for r in round_ if r.concurrency == c] for round_ in results]})
        table.add_row(str(c), *(f"{rps[n]:.0f}" for n in TARGETS), f"{ratios['chat_over_echo']:.3f}",
                      f"{ratios['chat_asyncio_over_echo_asyncio']:.3f}", f"{ratios['echo_bootstrap_over_echo']:.3f}",
                      f"{lat['chat'][0]:.1f}/{lat['chat'][1]:.1f}", f"{lat['echo'][0]:.1f}/{lat['echo'][1]:.1f}",
                      str(errors))
        cpu.add_row(str(c), *(f"{cpu_us[n]:.0f}" for n in TARGETS), f"{ratios['echo_cpu_over_chat_cpu']:.3f}")
    console.print(table)
    console.print(cpu)
    for name, what in TARGETS.items():
        console.print(f"  {name:15} {what}")
    return {"scenario": NAME, "load_generator": "ghz", "seconds_per_level": seconds, "rounds": len(results),
            "targets": TARGETS, "levels": rows}
