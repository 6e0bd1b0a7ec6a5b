"""A closed-loop load generator: N concurrent callers for a fixed time; latency percentiles."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass


@dataclass
class LoadResult:
    name: str
    concurrency: int
    seconds: float
    calls: int
    errors: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))]


async def run_load(name: str, call: Callable[[int], Awaitable[object]], concurrency: int, seconds: float,
                   warmup: float = 0.5) -> LoadResult:
    """Each worker calls `call(i)` back to back; only calls that start after the warm-up count."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    counting_from = start + warmup
    stop_at = counting_from + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                await call(w * 1_000_000 + i)
                ok = True
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            t1 = time.perf_counter()
            if t0 >= counting_from:
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors += 1
            i += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    latencies.sort()
    return LoadResult(
        name=name, concurrency=concurrency, seconds=seconds, calls=len(latencies), errors=errors,
        throughput=len(latencies) / seconds,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p95_ms=quantile(latencies, 0.95), p99_ms=quantile(latencies, 0.99),
    )
