"""The stream worker of a git revision against the working tree's, side by side in one run (same
minutes, same background load), alternating on fresh topics each time: the rate over 150k turns from
100 keys with the CPU of the worker and of PostgreSQL per 1k, then freshness (occurred_at to visible
in GetMetrics) under the same steady load for both, 80 % of the working tree's median rate.

    python -m bench.stream_compare --base <revision> [--rounds 2] [--keys 100] [--rate-only]
    python -m bench.stream_compare --variant lag4:PARLEY_STREAM_LAGGING_BATCHES=4 \
                                   --variant lag1:PARLEY_STREAM_LAGGING_BATCHES=1
    python -m bench.stream_compare --base <revision> --load 1500     # freshness and CPU at a fixed rate

With `--load` the rate is not measured: each worker gets that steady load (a chat service's pace, say),
and the table adds the CPU per event of the worker, PostgreSQL and the broker under it.

The revision's tree is exported with `git archive` and its worker started from there; everything else
(the analytics service, the load, the probes) is the working tree's. A `--variant` is the working
tree's worker with some settings of its own (a parameter sweep, alternated the same way); the load
of the freshness measure is 80 % of the median rate of the working tree, or of the first variant."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.table import Table

from bench.harness import bench_env, console, own_database, save_results
from bench.scenario_stream import BATCH, EVENTS, KEYS, environment, forget, freshness_under_load, worker_rate
from bench.stream_load import produce, serialized
from services.common import db
from services.common.topics import create_all_topics
from services.launcher import REPO, Launcher


def export(revision: str) -> Path:
    """The revision's files in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="parley-stream-base-"))
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as fh:
        fh.write(archive)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(target, filter="data")
    return target


@contextmanager
def worker(tree: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """The worker of `tree` as a process of its own; its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.analytics.stream"], cwd=tree, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def step(name: str, tree: Path, rate: float | None, keys_n: int, extra: dict[str, str]) -> dict:
    """With `rate` None: the worker's rate through a backlog of EVENTS; else freshness under `rate`.
    `extra`: settings of the worker alone."""
    env = {**os.environ, **bench_env(), "PARLEY_STREAM_BATCH_SIZE": str(BATCH)}
    with environment(env) as settings:
        await create_all_topics(settings)
        keys = [f"k{j:03d}-{uuid.uuid4().hex[:6]}" for j in range(keys_n)]
        pool = await db.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
        run_dir = Path(tempfile.mkdtemp(prefix="parley-bench-compare-"))
        launcher = Launcher(run_dir, env=env)
        try:
            if rate is None:
                await produce(settings.kafka_bootstrap, settings.topic("chat_turns"), serialized(keys, EVENTS))
            with worker(tree, {**env, **extra}, run_dir / "worker.log") as pid:
                if rate is None:
                    result = await worker_rate(pid, pool, settings.worker_app_id, EVENTS)
                else:
                    result = await freshness_under_load(settings, launcher, pid, pool, keys, rate)
        finally:
            launcher.stop()
            await forget(pool, keys, settings.worker_app_id)
            await pool.close()
    if rate is None:
        console.print(f"  {name}: {result['events_per_s']:,.0f} events/s")
    else:
        console.print(f"  {name}: freshness p50 / p99 {result['p50_s']:.2f} / {result['p99_s']:.2f} s; stored "
                      f"{result['stored_per_s']:,.0f} events/s, lag growth {result['lag_growth_per_s']:+,.0f}/s")
    return result


async def compare(base: str | None, variants: list[str], rounds: int, keys_n: int, freshness: bool,
                  load: float | None = None) -> dict:
    trees: dict[str, tuple[Path, dict[str, str]]] = {}
    if base:
        trees[f"base {base}"] = (export(base), {})
    for v in variants:
        label, _, settings_text = v.partition(":")
        trees[label] = (REPO, dict(kv.split("=", 1) for kv in settings_text.split(",") if kv))
    if not variants:
        trees["working tree"] = (REPO, {})
    names = list(trees)
    reference = "working tree" if "working tree" in trees else names[-len(variants)] if variants else names[-1]
    order = [names[r % len(names):] + names[:r % len(names)] if r % 2 == 0 else names[::-1] for r in range(rounds)]
    rates: dict[str, list[dict]] = {n: [] for n in names}
    for r, pair in enumerate(order if load is None else []):
        for name in pair:
            console.print(f"round {r + 1}, rate: {name} ...")
            rates[name].append(await step(name, *trees[name][:1], None, keys_n, trees[name][1]))
    if load is None:
        load = 0.8 * statistics.median(x["events_per_s"] for x in rates[reference])
    fresh: dict[str, list[dict]] = {n: [] for n in names}
    for r, pair in enumerate(order if freshness else []):
        for name in pair:
            console.print(f"round {r + 1}, freshness at {load:,.0f} events/s: {name} ...")
            fresh[name].append(await step(name, *trees[name][:1], load, keys_n, trees[name][1]))
    table = Table("measure (median of rounds)", *names, title=f"Stream worker, {' vs '.join(names)}, one run")
    if any(rates.values()):
        _rate_rows(table, names, rates, keys_n)
    if freshness:
        _freshness_rows(table, names, fresh, load)
        for part in ("worker", "postgres", "kafka"):
            table.add_row(f"CPU µs per event under the load: {part}",
                          *(f"{_median([x['cores'] for x in fresh[n]], part) / load * 1e6:.0f}" for n in names))
    console.print(table)
    return {"base": base, "variants": {n: t[1] for n, t in trees.items()}, "keys": keys_n, "rates": rates,
            "freshness": fresh, "load": load, "at": time.time()}


def _rate_rows(table: Table, names: list[str], rates: dict[str, list[dict]], keys_n: int) -> None:
    med = _median
    table.add_row(f"events/s ({keys_n} keys)", *(f"{med(rates[n], 'events_per_s'):,.0f}" for n in names))
    table.add_row("events/s per round", *(", ".join(f"{x['events_per_s']:,.0f}" for x in rates[n]) for n in names))
    table.add_row("cpu ms / 1k events: worker + postgres",
                  *(f"{med(rates[n], 'cpu_ms_per_1k'):.1f} + {med(rates[n], 'pg_cpu_ms_per_1k'):.1f}" for n in names))


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(x[key] for x in rows)


def _freshness_rows(table: Table, names: list[str], fresh: dict[str, list[dict]], load: float) -> None:
    med = _median
    table.add_row(f"freshness p50 / p99 s at {load:,.0f} events/s",
                  *(f"{med(fresh[n], 'p50_s'):.2f} / {med(fresh[n], 'p99_s'):.2f}" for n in names))
    table.add_row("freshness p99 s per round", *(", ".join(f"{x['p99_s']:.2f}" for x in fresh[n]) for n in names))
    table.add_row("busiest partition's share of the keys per round",
                  *(", ".join(str(max(p["keys"] for p in x["partitions"].values())) for x in fresh[n]) for n in names))
    table.add_row("events stored / s under the load, total lag growth / s",
                  *(f"{med(fresh[n], 'stored_per_s'):,.0f}, {med(fresh[n], 'lag_growth_per_s'):+,.0f}" for n in names))
    table.add_row("cores under the load: worker, postgres",
                  *(f"{med([x['cores'] for x in fresh[n]], 'worker'):.2f}, "
                    f"{med([x['cores'] for x in fresh[n]], 'postgres'):.2f}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.stream_compare", description=__doc__)
    parser.add_argument("--base", help="git revision whose worker is compared")
    parser.add_argument("--variant", action="append", default=[],
                        help="LABEL:KEY=VALUE[,KEY=VALUE]: the working tree's worker with these settings")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keys", type=int, default=KEYS, help="product keys the turns are spread over")
    parser.add_argument("--rate-only", action="store_true", help="no freshness measure")
    parser.add_argument("--load", type=float, help="freshness only, at this many events/s")
    args = parser.parse_args()
    if not args.base and len(args.variant) < 2:
        parser.error("give --base, or two variants or more")

    async def run() -> dict:
        async with own_database():
            return await compare(args.base, args.variant, args.rounds, args.keys, not args.rate_only, args.load)

    result = asyncio.run(run())
    save_results(result, "stream-compare")


if __name__ == "__main__":
    main()
