"""`Plan` over gRPC, search services of two versions of the code side by side in one run.

    .venv/bin/python -m bench.plan_compare --before <git ref> [--seconds 20] [--variant NAME:VAR=value,...]

Needs the local stack (`python -m deploy.local up`). Starts one search process per variant on its own
port: "before" runs the code of the git ref (exported with `git archive` into a temporary directory),
"after" the working tree, and each `--variant` the working tree with extra environment (e.g.
`--variant q1:PARLEY_EMBEDDING_QUERY_THREADS=1`). This process is the load: at concurrency 1 it
calls the services in turn, call by call, so that every variant sees the same moments of a shared,
noisy machine. Every call has a message of its own (the query-embedding cache never answers), over the
search scenario's synthetic corpus (100 keys of 1000 chunks, and the 50k-chunk key), created once.

Reported per variant: latency p50/p90/p99, and the search process's CPU time per Plan (from /proc: all
its threads, the onnxruntime ones included), with the machine's idle share during the run; then how
many of 100 replies to the same messages are identical to the "before" service's (strategy, reasons,
passages and their scores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import bench_env, cpu_seconds, free_port, save_results
from bench.load import quantile
from bench.stream_compare import export
from services.common import db
from services.common.admin import admin_metadata
from services.common.grpc_server import channel, check_serving
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc
from services.common.redis_client import create_redis
from services.launcher import REPO
from services.search import synthetic
from services.search.key_cache import KeyCache
from services.settings import Settings

KEYS = 100
# Plan as the response service calls it: with the platform's token (the one the variants start with, set
# by `run`), not charged to the key.
PLATFORM: list[tuple[str, str]] = []


@dataclass
class Variant:
    name: str
    root: Path                      # the code it runs
    env: dict[str, str] = field(default_factory=dict)
    addr: str = ""
    process: subprocess.Popen | None = None
    latencies: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def start(variant: Variant, base_env: dict[str, str], log_dir: Path) -> None:
    variant.addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **base_env, **variant.env, "PYTHONPATH": str(variant.root),
           "PARLEY_SEARCH_ADDR": variant.addr, "PARLEY_SEARCH_METRICS_PORT": str(free_port())}
    with open(log_dir / f"{variant.name}.log", "ab") as log:
        variant.process = subprocess.Popen([sys.executable, "-m", "services.search"], cwd=variant.root, env=env,
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)


async def wait_serving(variant: Variant, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with channel(variant.addr) as ch:
        while True:
            if variant.process.poll() is not None:
                raise RuntimeError(f"{variant.name}: the search process exited")
            try:
                await check_serving(ch, variant.name, timeout=1.0)
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


def machine_idle() -> tuple[int, int]:
    """(idle + iowait jiffies, all jiffies) of every CPU since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


async def measure(variants: list[Variant], seconds: float, questions: list[str]) -> dict:
    salt = f"{random.randrange(10 ** 6):06d}"
    stubs = {}
    channels = []
    for v in variants:
        ch = channel(v.addr)
        channels.append(ch)
        stubs[v.name] = search_pb2_grpc.SearchServiceStub(ch)
    idle = {}
    try:
        for v in variants:      # every key's vectors loaded, every key cached and seen valid
            for i in range(KEYS):
                await stubs[v.name].Plan(search_pb2.PlanRequest(product_key=synthetic.secret(i),
                                                                message=f"warm up {questions[i]} {salt}"), metadata=PLATFORM)
            await stubs[v.name].Plan(search_pb2.PlanRequest(product_key=synthetic.big_secret(), message=f"warm up {salt}"),
                                     metadata=PLATFORM)
        for kind in ("keys", "big"):
            before = {v.name: cpu_seconds(v.process.pid) for v in variants}
            idle0 = machine_idle()
            stop = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < stop:
                for n, v in enumerate(variants):
                    key = synthetic.secret(i % KEYS) if kind == "keys" else synthetic.big_secret()
                    # a message per call and variant: never in a query-embedding cache
                    message = f"{questions[i % len(questions)]} {kind}{salt}{n}"
                    t0 = time.perf_counter()
                    await stubs[v.name].Plan(search_pb2.PlanRequest(product_key=key, message=message), timeout=10,
                                             metadata=PLATFORM)
                    v.latencies.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
                i += 1
            idle1 = machine_idle()
            idle[kind] = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
            for v in variants:
                v.cpu[kind] = 1000 * (cpu_seconds(v.process.pid) - before[v.name]) / len(v.latencies[kind])
        same = await same_replies(variants, stubs, questions, salt)
    finally:
        for ch in channels:
            await ch.close()
    out: dict = {"seconds": seconds, "machine_idle": idle, "load_average": os.getloadavg()[0], "variants": {},
                 "same_replies": same}
    for v in variants:
        out["variants"][v.name] = {}
        for kind, ms in v.latencies.items():
            ms = sorted(ms)
            out["variants"][v.name][kind] = {
                "calls": len(ms), "p50_ms": statistics.median(ms), "p90_ms": quantile(ms, 0.9),
                "p99_ms": quantile(ms, 0.99), "max_ms": ms[-1], "cpu_ms_per_plan": v.cpu[kind]}
    return out


async def same_replies(variants: list[Variant], stubs: dict, questions: list[str], salt: str, calls: int = 100) -> dict:
    """The same messages (new to every variant's query cache) to every variant: how many replies are
    identical to the first variant's (strategy, reasons, passages with their scores, score table)."""
    same = dict.fromkeys((v.name for v in variants[1:]), 0)
    for i in range(calls):
        key = synthetic.secret(i % KEYS) if i % 4 else synthetic.big_secret()
        request = search_pb2.PlanRequest(product_key=key, message=f"{questions[-1 - i]} same{salt}")
        replies = [await stubs[v.name].Plan(request, timeout=10, metadata=PLATFORM) for v in variants]
        for v, reply in zip(variants[1:], replies[1:]):
            same[v.name] += reply == replies[0]
    return {"calls": calls, "identical_to_" + variants[0].name: same}


def report(result: dict) -> None:
    labels = {"keys": "100 keys x 1000 chunks", "big": "the 50k-chunk key"}
    for kind, label in labels.items():
        print(f"Plan over gRPC, concurrency 1, {label} (machine idle {result['machine_idle'][kind]:.0%}, "
              f"load average {result['load_average']:.1f} at the end)")
        print(f"  {'variant':12} {'calls':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'CPU/Plan':>9}")
        for name, by_kind in result["variants"].items():
            r = by_kind[kind]
            print(f"  {name:12} {r['calls']:6} {r['p50_ms']:7.2f} {r['p90_ms']:7.2f} {r['p99_ms']:7.2f} "
                  f"{r['max_ms']:7.1f} {r['cpu_ms_per_plan']:9.2f}")
    same = result["same_replies"]
    for baseline, counts in same.items():
        if baseline.startswith("identical_to_"):
            print(f"Replies identical to {baseline.removeprefix('identical_to_')}'s, {same['calls']} messages "
                  "(a quarter to the 50k-chunk key): " + ", ".join(f"{n} {c}" for n, c in counts.items()))


def parse_variant(text: str) -> Variant:
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return Variant(name, REPO, env)


async def run(args: argparse.Namespace) -> dict:
    settings = Settings()
    pool = await db.create_pool(settings.postgres_dsn, min_size=1, max_size=4)
    client = create_redis(settings.redis_url)
    try:
        # The keys get this process's secrets (the previous ones refused in the key cache too).
        cache = KeyCache(client, settings.key_cache_ttl_seconds)
        await synthetic.ensure_corpus(pool, keys=KEYS, chunks_per_key=1000, key_cache=cache)
        await synthetic.ensure_big_key(pool, key_cache=cache)
    finally:
        await client.aclose()
        await pool.close()
    work = Path(tempfile.mkdtemp(prefix="parley-plan-compare-"))
    before = export(args.before)
    variants = [Variant("before", before), Variant("after", REPO),
                *(parse_variant(v) for v in args.variant)]
    base_env = {**bench_env(), "PARLEY_LOG_LEVEL": "WARNING"}
    PLATFORM[:] = admin_metadata(base_env["PARLEY_ADMIN_TOKEN"])
    try:
        for v in variants:
            start(v, base_env, work)
        await asyncio.gather(*(wait_serving(v) for v in variants))
        words = synthetic.vocabulary()
        rng = random.Random(11)
        questions = [synthetic.sample_question(rng, words) for _ in range(2000)]
        result = await measure(variants, args.seconds, questions)
    finally:
        for v in variants:
            if v.process is not None and v.process.poll() is None:
                v.process.terminate()
        for v in variants:
            if v.process is not None:
                try:
                    v.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    v.process.kill()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(before, ignore_errors=True)
    result["before"] = args.before
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git ref of the code to compare the working tree with")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per set of keys")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:VAR=value,...: the working tree with this environment, as one more service")
    parser.add_argument("--repeat", type=int, default=1, help="runs, one after the other")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.repeat):
        runs.append(asyncio.run(run(args)))
        report(runs[-1])
    save_results({"plan_compare": runs}, "plan-compare")


if __name__ == "__main__":
    main()
