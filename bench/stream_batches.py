"""The sink alone at several batch sizes, alternated in one run: rows per second and the CPU of the
writer and of PostgreSQL per 1k rows (4 writers over 100 keys, rows built as the worker builds them).

    python -m bench.stream_batches [--sizes 1000,5000,20000] [--rounds 3]"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid

from bench.harness import bench_env, console, own_database
from bench.scenario_stream import environment, forget, postgres_cpu_seconds
from bench.stream_sink import _measure
from services.analytics.stream.sink import MetricsSink

ROWS = 40_000
WRITERS = 4


async def run(sizes: list[int], rounds: int) -> dict[int, list[tuple[float, float, float]]]:
    async with own_database():
        return await _run(sizes, rounds)


async def _run(sizes: list[int], rounds: int) -> dict[int, list[tuple[float, float, float]]]:
    with environment(bench_env()) as settings:
        keys = [f"batches-{j:03d}-{uuid.uuid4().hex[:6]}" for j in range(100)]
        group = f"batches-{uuid.uuid4().hex[:6]}"
        sink = MetricsSink(settings.postgres_dsn, group)
        await sink.on_start()
        results: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
        try:
            for r in range(rounds):
                for n, size in enumerate(sizes if r % 2 == 0 else sizes[::-1]):
                    first = (r * len(sizes) + n) * ROWS  # above the offsets written before
                    seconds, py, pg, _ = await _measure(sink.write_turns, keys, ROWS, WRITERS, size, first,
                                                     postgres_cpu_seconds, settings.stream_gc_threshold, ahead=True)
                    results[size].append((ROWS / seconds, 1e6 * py / ROWS, 1e6 * pg / ROWS))
                    console.print(f"  batch {size:,}: {ROWS / seconds:,.0f} rows/s, cpu ms / 1k rows "
                                  f"python {1e6 * py / ROWS:.1f}, postgres {1e6 * pg / ROWS:.1f}")
            await forget(sink.pool, keys, group)
        finally:
            await sink.on_shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.stream_batches", description=__doc__)
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(run([int(s) for s in args.sizes.split(",")], args.rounds))
    for size, rows in results.items():
        rate, py, pg = (statistics.median(x[i] for x in rows) for i in range(3))
        console.print(f"batch {size:,}: median {rate:,.0f} rows/s, cpu ms / 1k rows python {py:.1f} + postgres {pg:.1f}")


if __name__ == "__main__":
    main()
