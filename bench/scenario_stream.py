"""Scenario "stream": the worker's sustained rate from Kafka into PostgreSQL, events from 100 keys over
all partitions and from one key, against a raw aiokafka consumer (Kafka's ceiling) and against the
sink alone (PostgreSQL's ceiling); one step of the worker's path at a time; freshness from occurred_at
to visible in GetMetrics under a steady load at 80 % of the worker's rate, from a separate process, and
at 80 % of the rate the worker sustains beside such a load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from rich.table import Table

from bench.harness import bench_env, console, cpu_seconds, own_database
from deploy.local import stack as local_stack
from deploy.local.postgres import pg_layout, pg_postmaster_pid
from bench.load import quantile
from bench.stream_load import SteadyLoad, produce, serialized, turn
from bench.stream_sink import VARIANTS, sink_ceiling
from services.common import db
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import analytics_pb2, analytics_pb2_grpc
from services.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import Launcher

NAME = "stream"
EVENTS = 150_000
KEYS = 100
BATCH = 5000
# One step at a time, each a fresh worker on fresh topics (name, worker settings, keys).
STEPS = [
    ("own consumer, asyncio loop, 1 MiB fetches", {"PARLEY_STREAM_UVLOOP": "false", "PARLEY_STREAM_GC_THRESHOLD": "0",
                                                   "PARLEY_STREAM_PARTITION_FETCH_BYTES": str(1 << 20)}, KEYS),
    ("+ uvloop", {"PARLEY_STREAM_UVLOOP": "true", "PARLEY_STREAM_GC_THRESHOLD": "0",
                  "PARLEY_STREAM_PARTITION_FETCH_BYTES": str(1 << 20)}, KEYS),
    ("+ 8 MiB fetches", {"PARLEY_STREAM_GC_THRESHOLD": "0"}, KEYS),
    ("+ fewer garbage collections: the worker as configured", {}, KEYS),
    ("as configured, one key (one partition)", {}, 1),
]
# The step measured against the raw consumer, the sink and for freshness.
CONFIGURED = 3
# Backlogs the configured worker drains, each on fresh topics; its rate is the median drain. One
# drain of 150,000 events lasts 3-4 s, and on this shared machine one run's drains of the same worker
# ranged from 38,000 to 54,000 events/s.
DRAINS = 3


@contextmanager
def environment(env: dict[str, str]) -> Iterator[Settings]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def postgres_cpu_seconds() -> float:
    """CPU of the local stack's PostgreSQL: the postmaster, its live children, and the children that
    have exited (the postmaster's reaped children's time: a connection closed or an autovacuum worker
    done between two samples would otherwise take its CPU out of the sum). 0 when PostgreSQL is not
    the local stack's."""
    cfg = local_stack.StackConfig.from_env()
    postmaster = pg_postmaster_pid(pg_layout(cfg))
    if postmaster is None:
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == postmaster:
                total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            elif int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue  # a process that just exited
    return total


async def raw_consume_rate(settings: Settings, n: int) -> float:
    """Messages per second of a bare aiokafka consumer reading the topic from the start (no decode, no writes)."""
    consumer = AIOKafkaConsumer(settings.topic("chat_turns"), bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        seen, first = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if first is None and batch:
                first = time.perf_counter()
            seen += sum(len(m) for m in batch.values())
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def stored(pool: asyncpg.Pool, group: str) -> int:
    """Events the worker has stored (or dead-lettered): the sum of its stored next offsets."""
    return int(await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM stream_offsets "
                                   "WHERE consumer_group = $1", group))


async def worker_rate(pid: int, pool: asyncpg.Pool, group: str, n: int) -> dict:
    """Events per second from the worker's first stored batch to the last event, and its CPU per 1k."""
    while (first_done := await stored(pool, group)) == 0:
        await asyncio.sleep(0.02)
    first, cpu0, pg0 = time.perf_counter(), cpu_seconds(pid), postgres_cpu_seconds()
    while (done := await stored(pool, group)) < n:
        await asyncio.sleep(0.1)
    elapsed, cpu, pg = time.perf_counter() - first, cpu_seconds(pid) - cpu0, postgres_cpu_seconds() - pg0
    events = done - first_done
    return {"events_per_s": events / elapsed, "cpu_ms_per_1k": 1e6 * cpu / events, "pg_cpu_ms_per_1k": 1e6 * pg / events,
            # What two otherwise idle cores would sustain if the worker and PostgreSQL had them (an estimate).
            "two_core_capacity": 2 * events / (cpu + pg)}


def key_names(n: int) -> list[str]:
    return [f"k{j:03d}-{uuid.uuid4().hex[:6]}" for j in range(n)]


async def run_step(label: str, extra: dict[str, str], keys: int, measure_raw: bool,
                   names: list[str] | None = None, earlier: list[dict] = ()) -> dict:
    """One drain of a backlog by a fresh worker. `earlier`: the same step's drains before this one;
    the step's rate is then the median drain (its CPU figures with it), and freshness is measured
    at 80 % of that rate."""
    env = {**bench_env(), "PARLEY_STREAM_BATCH_SIZE": str(BATCH), **extra}
    with environment(env) as settings:
        await create_all_topics(settings)
        names = names or key_names(keys)
        await produce(settings.kafka_bootstrap, settings.topic("chat_turns"), serialized(names, EVENTS))
        raw = await raw_consume_rate(settings, EVENTS) if measure_raw else None
        pool = await db.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
        launcher = Launcher(Path(tempfile.mkdtemp(prefix="parley-bench-stream-")), env=env)
        try:
            launcher.start(["worker"])
            result = await worker_rate(launcher.pid("worker"), pool, settings.worker_app_id, EVENTS)
            drains = [*earlier, result]
            median = sorted(drains, key=lambda r: r["events_per_s"])[len(drains) // 2]
            result = {**{k: median[k] for k in result}, "drains": [r["events_per_s"] for r in drains]}
            counted = await pool.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = ANY($1)", names)
            if measure_raw:
                result.update(await freshness_measures(settings, launcher, pool, names, result["events_per_s"]))
        finally:
            launcher.stop()
            await forget(pool, names, settings.worker_app_id)
            await pool.close()
    console.print(f"  {label}: {result['events_per_s']:,.0f} events/s, counted {int(counted or 0)}")
    return {"step": label, "keys": keys, "counted": int(counted or 0), "raw_consumer_per_s": raw, **result}


async def freshness_measures(settings: Settings, launcher: Launcher, pool: asyncpg.Pool, keys: list[str],
                             drained: float) -> dict:
    """Freshness at 80 % of the rate the worker drained a backlog at; the rate it sustains beside a
    steady load (the load, a separate process, at that whole rate: what the worker stores per second
    while its backlog grows); freshness at 80 % of that. The drained rate is that of the worker and
    PostgreSQL alone on the machine; beside a steady load the generator, the Kafka broker taking its
    writes and the probes' GetMetrics share the two cores with them."""
    pid = launcher.pid("worker")
    fresh = await freshness_under_load(settings, launcher, pid, pool, keys, 0.8 * drained)
    # Without probes: each probe polls GetMetrics until it sees its turn, so the further behind the
    # worker, the more polls (in one run, the analytics service took 0.19 cores, as much as the worker).
    beside = await freshness_under_load(settings, launcher, pid, pool, keys, drained, probing=False)
    sustained = beside["stored_per_s"]
    return {"freshness": fresh, "beside_load": beside, "sustained_per_s": sustained,
            "freshness_sustained": await freshness_under_load(settings, launcher, pid, pool, keys, 0.8 * sustained)}


async def forget(pool: asyncpg.Pool, keys: list[str], group: str) -> None:
    """The run's rows go, so that every run writes into tables of the same size."""
    await pool.execute("DELETE FROM conversations WHERE product_key_id = ANY($1)", keys)
    await pool.execute("DELETE FROM metrics_minute WHERE product_key_id = ANY($1)", keys)
    await pool.execute("DELETE FROM stream_offsets WHERE consumer_group = $1", group)


async def freshness_under_load(settings: Settings, launcher: Launcher, worker_pid: int, pool: asyncpg.Pool,
                               keys: list[str], rate: float, seconds: float = 20.0, probing: bool = True) -> dict:
    """Seconds from a probe turn's occurred_at to its being counted by GetMetrics (the analytics
    service started by `launcher`), while a separate process sends `rate` turns/s (80 % of the
    worker's measured rate) over the same keys; with each
    partition's share of the keys, its probes and its lag (Kafka's end offset - the stored offset)
    sampled along the run, so a partition whose writer falls behind shows as such."""
    launcher.start(["analytics"])
    await _wait_analytics(settings)
    topic = settings.topic("chat_turns")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    partitions = sorted(await producer.partitions_for(topic))
    # A worker started for this measure may not have joined its group yet (its start alone takes
    # several seconds on a loaded machine): the load would then begin with a backlog of those
    # seconds, measured as if the worker had fallen behind.
    warm_up = await consuming(producer, pool, settings.worker_app_id, topic, partitions)
    load = SteadyLoad(settings.kafka_bootstrap, topic, keys, rate, seconds)
    await load.start()
    key_share = Counter(DefaultPartitioner()(k.encode(), partitions, partitions) for k in keys)
    lags = PartitionLag(settings, pool, topic, partitions)
    await lags.start()

    admin = (("x-parley-admin-token", settings.admin_token),)
    probes = Probes(producer, topic, partitions, keys, admin)
    try:
        async with channel(settings.analytics_addr) as ch:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(ch)
            await asyncio.sleep(2.0)  # the load is on
            busy = Busy({"worker": worker_pid, "analytics": launcher.pid("analytics"),
                         "generator": load.process.pid, **kafka_broker()})
            watching = asyncio.ensure_future(probes.watch(stub))
            deadline = time.monotonic() + seconds - 4
            while probing and time.monotonic() < deadline:  # one probe every 0.25 s, the partitions in turn
                await probes.send()
                await asyncio.sleep(0.25)
            if not probing:
                await asyncio.sleep(deadline - time.monotonic())
            cores = busy.cores()  # over the probes' sending, while the load is on
            await probes.seen_all(watching)
        sent_load = await load.wait()
        drained_after = await lags.drained()  # the next measure starts without this one's backlog
    finally:
        await lags.stop()
        await producer.stop()
    results = probes.results
    ordered = sorted(s for s, _ in results.values()) or [float("nan")]
    # samples in the order the probes were sent: a rise along the run is a backlog growing
    return {"rate": rate, "sent": sent_load, "p50_s": statistics.median(ordered), "p99_s": quantile(ordered, 0.99),
            "samples": [results[i][0] for i in sorted(results)], "cores": cores, "warm_up_s": warm_up,
            "drained_after_s": drained_after,
            **lags.trend(2.0, seconds - 2.0),
            "partitions": _per_partition(partitions, key_share, results, lags),
            "lag_series": {p: lags.series[p] for p in partitions}}


class Probes:
    """Probe turns, one every call of `send`, each partition in turn, and the seconds from a probe's
    occurred_at to its being counted by GetMetrics. Each partition's probes share a product key of
    their own, so the turns GetMetrics counts for it say how many of that partition's probes are
    visible (a partition is written in offset order, so they are its first ones): one GetMetrics per
    partition every 0.1 s, whatever the number of probes in flight. (A poll per probe made the probes'
    own cost grow with the worker's lag: 10-20 probes in flight once it was a few seconds behind,
    100-200 GetMetrics a second, and the analytics service, PostgreSQL and this process took that
    CPU from the worker they measured.)"""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: list[int], keys: list[str],
                 metadata) -> None:
        self.producer, self.topic, self.metadata = producer, topic, metadata
        by_partition: dict[int, str] = {}
        for k in keys:  # a key of the load for each partition it reaches: the probes go where the load goes
            by_partition.setdefault(DefaultPartitioner()(k.encode(), partitions, partitions), k)
        self.route = sorted(by_partition.items())
        self.probe_key = {p: f"fresh-{p}-{uuid.uuid4().hex[:8]}" for p, _ in self.route}
        self.sent: dict[int, list[tuple[int, float]]] = {p: [] for p, _ in self.route}  # (probe number, time)
        self.seen = {p: 0 for p, _ in self.route}
        self.results: dict[int, tuple[float, int]] = {}  # probe number -> (seconds, partition)
        self.count = 0

    async def send(self) -> None:
        p, kafka_key = self.route[self.count % len(self.route)]
        t = turn(self.probe_key[p], self.count)
        sent = time.time()
        t.occurred_at.FromNanoseconds(int(sent * 1e9))
        self.sent[p].append((self.count, sent))
        self.count += 1
        # Delivered before the next is sent, so each partition's probes are stored in the order sent.
        await (await self.producer.send(self.topic, t.SerializeToString(), key=kafka_key.encode(), partition=p))

    async def watch(self, stub) -> None:
        while True:
            for p, probe_key in self.probe_key.items():
                if self.seen[p] == len(self.sent[p]):
                    continue
                reply = await stub.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=probe_key),
                                              metadata=self.metadata, timeout=5)
                now, counted = time.time(), min(reply.total.turns, len(self.sent[p]))
                for number, sent in self.sent[p][self.seen[p]:counted]:
                    self.results[number] = (now - sent, p)
                self.seen[p] = counted
            await asyncio.sleep(0.1)

    async def seen_all(self, watching: asyncio.Future, timeout: float = 300.0) -> None:
        started = time.monotonic()
        try:
            while len(self.results) < self.count:
                if watching.done():
                    watching.result()  # its error
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{self.count - len(self.results)} probe(s) not counted in {timeout:.0f} s")
                await asyncio.sleep(0.1)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


async def consuming(producer: AIOKafkaProducer, pool: asyncpg.Pool, group: str, topic: str,
                    partitions: list[int], timeout: float = 120.0) -> float:
    """Seconds until the worker has stored a turn sent to each partition: it is in its group and
    writing every partition."""
    started = time.monotonic()
    for p in partitions:
        await producer.send_and_wait(topic, turn(f"warm-{uuid.uuid4().hex[:8]}", p).SerializeToString(), partition=p)
    while True:
        done = await pool.fetchval("SELECT count(*) FROM stream_offsets WHERE consumer_group = $1 AND topic = $2 "
                                   "AND next_offset > 0", group, topic)
        if done >= len(partitions):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the worker stored nothing on {len(partitions) - done} partition(s) in {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _per_partition(partitions: list[int], key_share: Counter, results: dict[int, tuple[float, int]],
                   lags: PartitionLag) -> dict[int, dict]:
    """Each partition's keys, its probes' p50 / p99 and its largest and last sampled lag."""
    per_partition = {}
    for p in partitions:
        mine = sorted(s for s, part in results.values() if part == p)
        series = [lag for _, lag in lags.series[p]]
        per_partition[p] = {"keys": key_share.get(p, 0), "probes": len(mine),
                            "p50_s": statistics.median(mine) if mine else None,
                            "p99_s": quantile(mine, 0.99) if mine else None,
                            "max_lag": max(series, default=0), "last_lag": series[-1] if series else 0}
    return per_partition


class PartitionLag:
    """Samples each partition's lag (Kafka's end offset - the offset stored with the data) every
    `every` seconds, as (seconds since start, lag)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, topic: str, partitions: list[int],
                 every: float = 0.5) -> None:
        self.group, self.topic, self.every, self.pool = settings.worker_app_id, topic, every, pool
        self.tps = [TopicPartition(topic, p) for p in partitions]
        self.series: dict[int, list[tuple[float, int]]] = {p: [] for p in partitions}
        self.stored: list[tuple[float, int]] = []  # (seconds since start, sum of the stored offsets)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        self._task: asyncio.Future | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _sample(self) -> None:
        started = time.monotonic()
        while True:
            ends = await self._consumer.end_offsets(self.tps)
            rows = await self.pool.fetch("SELECT partition, next_offset FROM stream_offsets "
                                         "WHERE consumer_group = $1 AND topic = $2", self.group, self.topic)
            stored = {r["partition"]: r["next_offset"] for r in rows}
            at = time.monotonic() - started
            for tp, end in ends.items():
                self.series[tp.partition].append((round(at, 2), end - stored.get(tp.partition, 0)))
            self.stored.append((at, sum(stored.values())))
            await asyncio.sleep(self.every)

    async def drained(self, timeout: float = 300.0) -> float:
        """Seconds from now until every partition's lag is 0."""
        started = time.monotonic()
        while any(not series or series[-1][1] > 0 for series in self.series.values()):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the worker's backlog was not drained in {timeout:.0f} s")
            await asyncio.sleep(self.every)
        return time.monotonic() - started

    def trend(self, start: float, end: float) -> dict[str, float]:
        """From `start` to `end` seconds into the load: events stored per second, and how fast the
        total lag grew (> 0: the load is above what the worker sustains beside it; a burst's backlog
        shrinks afterwards, one from too high a rate does not)."""
        inside = [i for i, (at, _) in enumerate(self.stored) if start <= at <= end]
        if len(inside) < 2:
            return {"stored_per_s": 0.0, "lag_growth_per_s": 0.0}
        i, j = inside[0], inside[-1]
        span = self.stored[j][0] - self.stored[i][0]
        lag = [sum(s[k][1] for s in self.series.values()) for k in (i, j)]
        return {"stored_per_s": (self.stored[j][1] - self.stored[i][1]) / span, "lag_growth_per_s": (lag[1] - lag[0]) / span}


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def kafka_broker() -> dict[str, int]:
    """The local stack's Kafka broker, which takes the load's writes on the same cores ({} when the
    broker is not the local stack's)."""
    pid_file = local_stack.StackConfig.from_env().pid_file("kafka")
    try:
        pid = int(pid_file.read_text().strip())
        cpu_seconds(pid)
    except (OSError, ValueError):
        return {}
    return {"kafka": pid}


class Busy:
    """Cores used by some processes (and the local PostgreSQL) from now to `cores()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = time.perf_counter(), {name: cpu_seconds(pid) for name, pid in pids.items()}, postgres_cpu_seconds()

    def cores(self) -> dict[str, float]:
        t0, cpu0, pg0 = self.start
        elapsed = time.perf_counter() - t0
        used = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in self.pids.items()}
        return {**used, "postgres": (postgres_cpu_seconds() - pg0) / elapsed}


async def _wait_analytics(settings: Settings, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with channel(settings.analytics_addr) as ch:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(ch)
        while True:
            try:
                await stub.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id="probe"),
                                     metadata=(("x-parley-admin-token", settings.admin_token),), timeout=1)
                return
            except Exception:  # noqa: BLE001 - starting
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def run(seconds: float, concurrencies: list[int]) -> dict:
    async with own_database():
        return await _run()


async def _run() -> dict:
    with environment(bench_env()) as settings:
        console.print("the sink alone (no Kafka) ...")
        # The worker as configured and the sink alone get the same keys: the same share of the load
        # on each partition (an uneven one: the slowest partition sets both rates).
        names = key_names(KEYS)
        sink = await sink_ceiling(settings, postgres_cpu_seconds, forget, keys_n=KEYS, batch=BATCH, keys=names)
    steps = []
    for n, (label, extra, keys) in enumerate(STEPS):
        console.print(f"producing {EVENTS:,} turns over {keys} key(s); worker: {label} ...")
        if n != CONFIGURED:
            steps.append(await run_step(label, extra, keys, measure_raw=False))
            continue
        earlier = []
        for drain in range(1, DRAINS):
            earlier.append(await run_step(f"{label}, drain {drain} of {DRAINS}", extra, keys, False, names))
        steps.append(await run_step(label, extra, keys, measure_raw=True, names=names, earlier=earlier))
    final = steps[CONFIGURED]
    fresh = final["freshness"]
    table = Table("measure", "value", title="Stream processor: Kafka -> PostgreSQL (machine shared: noisy)")
    for name, label in VARIANTS.items():
        py, pg = sink[f"{name}_cpu_ms_per_1k"]
        table.add_row(f"sink alone rows/s ({sink['writers']} writers): {label}",
                      f"{sink[f'{name}_rows_per_s']:,.0f}  (cpu ms / 1k rows: python {py:.0f}, postgres {pg:.0f})")
    table.add_row("  the worker's write counting its first batches' rows, built before the first write",
                  f"{sink['copy_with_start_rows_per_s']:,.0f}  ({sink['copy_start_s']:.2f} s before the first writes, "
                  "in all; the worker pays it once)")
    for s in steps:
        drains = s["drains"]
        table.add_row(f"worker events/s: {s['step']} ({s['keys']} keys)"
                      + (f", median of {len(drains)} drains" if len(drains) > 1 else ""),
                      f"{s['events_per_s']:,.0f}  (cpu ms / 1k events: worker {s['cpu_ms_per_1k']:.0f}, "
                      f"postgres {s['pg_cpu_ms_per_1k']:.0f}; counted {s['counted']})"
                      + (" drains " + ", ".join(f"{d:,.0f}" for d in drains) if len(drains) > 1 else ""))
    table.add_row("estimate: events/s on two idle cores (worker + postgres cpu per event)",
                  f"{final['two_core_capacity']:,.0f}")
    table.add_row("raw aiokafka consumer msgs/s", f"{final['raw_consumer_per_s']:,.0f}")
    table.add_row("worker / raw consumer", f"{final['events_per_s'] / final['raw_consumer_per_s']:.3f}")
    table.add_row("worker / sink ceiling", f"{final['events_per_s'] / sink['copy_rows_per_s']:.2f}")
    # The two rates come from different minutes of a shared machine; their CPU per event does not move
    # as much with the load beside them.
    sink_cpu = sum(sink["copy_cpu_ms_per_1k"])
    table.add_row("worker / sink ceiling on two idle cores (from cpu per event: sink / worker)",
                  f"{sink_cpu / (final['cpu_ms_per_1k'] + final['pg_cpu_ms_per_1k']):.2f}")
    table.add_row(f"freshness p50 / p99 s at {fresh['rate']:,.0f} events/s (80 %)",
                  f"{fresh['p50_s']:.3f} / {fresh['p99_s']:.3f}  ({len(fresh['samples'])} probes)")
    table.add_row("cores busy under that load", ", ".join(f"{k} {v:.2f}" for k, v in fresh["cores"].items()))
    table.add_row("under that load: events stored / s, total lag growth / s",
                  f"{fresh['stored_per_s']:,.0f}, {fresh['lag_growth_per_s']:+,.0f}")
    beside, again = final["beside_load"], final["freshness_sustained"]
    table.add_row(f"worker events/s beside a steady load of {beside['rate']:,.0f}/s (the drained rate; no probes)",
                  f"{final['sustained_per_s']:,.0f}  (lag growth {beside['lag_growth_per_s']:+,.0f}/s; cores "
                  + ", ".join(f"{k} {v:.2f}" for k, v in beside["cores"].items()) + ")")
    table.add_row(f"freshness p50 / p99 s at {again['rate']:,.0f} events/s (80 % of the rate beside a load)",
                  f"{again['p50_s']:.3f} / {again['p99_s']:.3f}  (stored {again['stored_per_s']:,.0f}/s, "
                  f"lag growth {again['lag_growth_per_s']:+,.0f}/s)")
    for p, part in fresh["partitions"].items():
        table.add_row(f"  partition {p}: {part['keys']} keys, {part['probes']} probes",
                      f"p50 / p99 {_s(part['p50_s'])} / {_s(part['p99_s'])} s; lag max {part['max_lag']:,}, "
                      f"at the end {part['last_lag']:,}")
    console.print(table)
    return {"scenario": NAME, "events": EVENTS, "batch": BATCH, "sink": sink, "steps": steps,
            "worker_over_raw": final["events_per_s"] / final["raw_consumer_per_s"],
            "worker_over_sink": final["events_per_s"] / sink["copy_rows_per_s"],
            "worker_over_sink_by_cpu": sum(sink["copy_cpu_ms_per_1k"]) / (final["cpu_ms_per_1k"] + final["pg_cpu_ms_per_1k"])}
