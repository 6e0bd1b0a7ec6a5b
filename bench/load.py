"""Closed-loop load: N concurrent callers for a fixed time, latency percentiles. In-process
(`run_load`), or from ghz in its own process (`run_ghz`), which does not compete with the server
for this interpreter."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness import cpu_seconds
from services.launcher import REPO

GHZ = REPO / ".local" / "bin" / "ghz"


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
    server_cpu_us: float = 0.0   # CPU time of the server process per successful call (ghz runs)
    error_kinds: dict[str, int] | None = None  # ghz: error message -> count

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


def ghz_path() -> Path:
    if not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: build it with `make grpc-tools`")
    return GHZ


async def run_ghz(name: str, target: str, call: str, data: list[dict], concurrency: int, seconds: float,
                  warmup: float = 0.5, server_pid: int = 0) -> LoadResult:
    """ghz on `target` (method found by server reflection), requests taken round-robin from `data`,
    `concurrency` callers on one connection for `seconds`, after a short unmeasured warm-up.
    With `server_pid`, also the server's CPU time per call: it depends less than req/s on what
    else the machine is doing (though not independent of it)."""
    base = [str(ghz_path()), "--insecure", "--call", call, "-d", json.dumps(data), "-c", str(concurrency),
            "--connections", "1", "--format", "json", target]
    await _ghz(base, warmup, target)
    cpu = cpu_seconds(server_pid) if server_pid else 0.0
    out = await _ghz(base, seconds, target)
    cpu = cpu_seconds(server_pid) - cpu if server_pid else 0.0
    report = json.loads(out)
    ok = (report.get("statusCodeDistribution") or {}).get("OK", 0)
    # -z ends the calls in flight at the deadline (at most `concurrency`): not the server's errors.
    kinds = {message: n for message, n in (report.get("errorDistribution") or {}).items()
             if "use of closed network connection" not in message}
    errors = sum(kinds.values())
    by_pct = {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return LoadResult(
        name=name, concurrency=concurrency, seconds=seconds, calls=ok, errors=errors,
        throughput=ok / (report["total"] / 1e9) if report.get("total") else 0.0,
        p50_ms=by_pct.get(50, 0.0), p95_ms=by_pct.get(95, 0.0), p99_ms=by_pct.get(99, 0.0),
        server_cpu_us=cpu / ok * 1e6 if ok else 0.0, error_kinds=kinds,
    )


async def _ghz(base: list[str], seconds: float, target: str, attempts: int = 3) -> bytes:
    """One ghz run of `seconds`; run again when ghz itself crashes (under heavy load its -z deadline
    can panic with "send on closed channel"), never when the server failed."""
    for attempt in range(1, attempts + 1):
        proc = await asyncio.create_subprocess_exec(
            *base, "-z", f"{seconds}s", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            return out
        if b"panic:" not in err or attempt == attempts:
            raise RuntimeError(f"ghz failed on {target}: {err.decode()[:2000]}{out.decode()[:500]}")
    raise AssertionError("not reached")
