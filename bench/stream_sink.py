"""The stream bench's sink ceiling: the batch write alone (no Kafka), its variants side by side in one
run, with the CPU of the writer and of PostgreSQL per 1k rows. Each writer writes as the worker's
partition writers do: the next batch's rows are built (in slices, letting the loop run between them)
while the current batch is in PostgreSQL, and the bench process collects garbage as the worker does.
The measure starts once every writer has its first batch's rows (see _Start).

    python -m bench.stream_sink [--rounds 3] [--rows 100000] [--batch 5000] [--keys 100]"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable

from aiokafka.partitioner import DefaultPartitioner

from bench.stream_baseline import WRITE_TURNS as BASELINE_WRITE_TURNS, turn_columns as baseline_columns
from bench.stream_load import turn
from services.analytics.stream.consumer import DECODE_SLICE
from services.analytics.stream.rows import TurnBatch
from services.analytics.stream.sink import MetricsSink, Position, insert_turns_skipping_stored
from services.settings import Settings

# Rows of each variant in each round: five batches of 5,000 per writer. With two (40,000 rows, the
# measure before), the four writers' first COPYs and INSERTs start together and stay in step, so
# Python and PostgreSQL take turns instead of overlapping, and the figure is the start's, not the
# steady state's: alternated on a quiet machine (two runs of each), the worker's write gave 50,510
# and 48,642 rows/s with 40,000 rows per round against 61,472 and 55,404 with 100,000.
ROWS_PER_ROUND = 100_000

_PARTITIONER = DefaultPartitioner()

# (records, their rows built beforehand) -> applied
Write = Callable[[list, TurnBatch | None], Awaitable[object]]

# name in the results -> what the bench table calls it
VARIANTS = {
    "copy": "COPY + plain INSERT ... SELECT, rows built while the batch before is written (the worker's write, "
            "steady state)",
    "random_ids": "the worker's write, turns with random (version-4) event ids instead of time-ordered (version-7) "
                  "ones (the ids before)",
    "inline": "COPY + plain INSERT ... SELECT, rows built inside the write (the write before)",
    "skipping": "COPY + INSERT ... SELECT ON CONFLICT DO NOTHING RETURNING on every batch, rows inside the write",
    "baseline": "one statement over 23 unnested arrays, histograms in SQL (the write before COPY)",
}


async def _rows(events: list) -> TurnBatch:
    """The batch's rows, built as a partition writer builds them while a write is in flight."""
    batch = TurnBatch()
    for i in range(0, len(events), DECODE_SLICE):
        batch.add(events[i:i + DECODE_SLICE])
        await asyncio.sleep(0)
    return batch


class _Start:
    """The measure's start: when every writer is ready to write its first batch (with `ahead`, once
    the first batch's rows are built). The worker builds a batch's rows while the batch before is
    written; its very first batch, built with no write to overlap, is a start-up cost paid once,
    which a measure of two batches per writer would count as half of its row building."""

    def __init__(self, writers: int, postgres_cpu: Callable[[], float]) -> None:
        self.waiting, self.postgres_cpu = writers, postgres_cpu
        self.go = asyncio.Event()
        self.created = time.perf_counter()
        self.at = (0.0, 0.0, 0.0)

    async def ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.at = time.perf_counter(), time.process_time(), self.postgres_cpu()
            self.go.set()
        await self.go.wait()


async def _write_all(write: Write, events: list, partition: int, first: int, batch: int, ahead: bool,
                     start: _Start) -> None:
    """Batch after batch; with `ahead`, each batch's rows built while the one before is written, and
    while the last one is written the rows of one more batch (discarded): so each write overlaps one
    batch's row building, as in the worker's steady state, and the measure counts as many builds as
    writes."""
    ready = await _rows(events[:batch]) if ahead else None
    await start.ready()
    for i in range(0, len(events), batch):
        records = [(Position("sink", partition, first + i + j), e) for j, e in enumerate(events[i:i + batch])]
        writing = asyncio.ensure_future(write(records, ready))
        try:
            if ahead:
                ready = await _rows(events[i + batch:i + 2 * batch] or events[i:i + batch])
            await writing
        finally:
            writing.cancel()


def by_partition(keys: list[str], partitions: int) -> list[list[str]]:
    """The keys of each partition as the producer's partitioner (murmur2 of the key) puts them: each
    writer of the sink bench writes its keys' turns, as many per key as every other writer, so its
    share of the rows is its partition's share of the keys, as in the worker's bench (100 keys over 4
    partitions fall 18-28 to a partition; an even split measured the sink on a load it never gets)."""
    mine: list[list[str]] = [[] for _ in range(partitions)]
    for key in keys:
        mine[_PARTITIONER(key.encode(), list(range(partitions)), list(range(partitions)))].append(key)
    return mine


async def _measure(write: Write, keys: list[str], rows: int, writers: int, batch: int, first: int,
                   postgres_cpu: Callable[[], float], gc_threshold: int,
                   ahead: bool, random_ids: bool = False) -> tuple[float, float, float, float]:
    """(seconds, python cpu s, postgres cpu s) of `writers` concurrent writers (one per partition that
    has keys, see by_partition) of `rows` turns in all, at
    offsets from `first` on (above those written before, which the sink would skip), from the moment
    every writer is ready to write (_Start); and the seconds until that moment. `random_ids`: the
    turns' event ids are random version-4 UUIDs."""
    mine = [m for m in by_partition(keys, writers) if m]
    counts = [rows * len(m) // len(keys) for m in mine]
    counts[counts.index(max(counts))] += rows - sum(counts)     # the rows all written, whatever the rounding
    parts = [[turn(m[i % len(m)], first + i) for i in range(n)] for m, n in zip(mine, counts)]
    if random_ids:
        for part in parts:
            for t in part:
                t.event_id = uuid.uuid4().hex
    # The bench's own inputs (every turn of the run, built beforehand) are moved out of the garbage
    # collector's generations: the worker never holds more than a few batches, and collecting
    # through all of them cost the writer about 3 ms of CPU per 1k rows here. The worker's
    # first-generation threshold applies meanwhile.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    if gc_threshold > 0:
        gc.set_threshold(gc_threshold, 20, 100)
    try:
        start = _Start(len(parts), postgres_cpu)
        await asyncio.gather(*[_write_all(write, part, w, first, batch, ahead, start) for w, part in enumerate(parts)])
        t0, cpu0, pg0 = start.at
        return time.perf_counter() - t0, time.process_time() - cpu0, postgres_cpu() - pg0, t0 - start.created
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def sink_ceiling(settings: Settings, postgres_cpu: Callable[[], float], forget, *, keys_n: int, batch: int,
                       rows: int = ROWS_PER_ROUND, writers: int = 4, rounds: int = 3,
                       keys: list[str] | None = None) -> dict:
    """Rows per second of the batch write alone: `writers` concurrent writers (the worker has one per
    partition, 4 by default) of batches of `batch` over `keys_n` keys, each key with one writer as
    Kafka's partitioner would have it (`keys`: the ones the worker's bench will send, so that both
    split the load over the partitions alike; else `keys_n` new ones). The sink's write, the same write of turns with random event ids,
    and the writes before it alternate in `rounds` rounds, in turn first (so that the load of the machine and the table's growth fall on all alike);
    the statement before COPY runs once, as a reference."""
    keys = keys or [f"sink-{j:03d}-{uuid.uuid4().hex[:6]}" for j in range(keys_n)]
    group = f"sink-bench-{uuid.uuid4().hex[:6]}"
    sink = MetricsSink(settings.postgres_dsn, group)
    await sink.on_start()

    async def inline(records, _ready) -> None:
        await sink.write_turns(records)

    async def skipping(records, _ready) -> None:
        await sink._write(records, insert_turns_skipping_stored)

    async def baseline(records, _ready) -> None:
        async with sink.pool.acquire() as conn, conn.transaction():
            await conn.execute(BASELINE_WRITE_TURNS, *baseline_columns([e for _, e in records]))

    writes = {"copy": sink.write_turns, "random_ids": sink.write_turns, "inline": inline, "skipping": skipping,
              "baseline": baseline}
    order = ["copy", "random_ids", "inline", "skipping"]
    plan = [name for r in range(rounds) for name in order[r % len(order):] + order[:r % len(order)]]
    plan.append("baseline")
    totals = {name: [0, 0.0, 0.0, 0.0, 0.0] for name in writes}
    try:
        for n, name in enumerate(plan):
            part_rows = rows if name != "baseline" else rows // 2
            measured = await _measure(writes[name], keys, part_rows, writers, batch, n * rows,
                                      postgres_cpu, settings.stream_gc_threshold, ahead=name in ("copy", "random_ids"),
                                      random_ids=name == "random_ids")
            for i, v in enumerate((part_rows, *measured)):
                totals[name][i] += v
        await forget(sink.pool, keys, group)
    finally:
        await sink.on_shutdown()
    result: dict = {"writers": writers, "batch": batch}
    for name, (n, seconds, py, pg, before) in totals.items():
        result[f"{name}_rows_per_s"] = n / seconds
        result[f"{name}_cpu_ms_per_1k"] = (1e6 * py / n, 1e6 * pg / n)
        # What the measure leaves out, with "copy": the first batches' rows, built before the first
        # write, once per measure (a few batches per writer) where the worker builds them once.
        result[f"{name}_start_s"] = before
        result[f"{name}_with_start_rows_per_s"] = n / (seconds + before)
    return result


def main() -> None:
    """`python -m bench.stream_sink [--rounds 3] [--batch 5000]`: the sink's variants alone, alternated."""
    import argparse  # noqa: PLC0415 - only for the command line

    from bench.harness import bench_env, console, own_database  # noqa: PLC0415
    from bench.scenario_stream import environment, forget, postgres_cpu_seconds  # noqa: PLC0415 - imports this module

    parser = argparse.ArgumentParser(prog="bench.stream_sink", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rows", type=int, default=ROWS_PER_ROUND, help="rows of each variant in each round")
    args = parser.parse_args()

    async def run() -> dict:
        async with own_database():
            with environment(bench_env()) as settings:
                return await sink_ceiling(settings, postgres_cpu_seconds, forget, keys_n=args.keys, batch=args.batch,
                                      rounds=args.rounds, rows=args.rows)

    result = asyncio.run(run())
    for name, label in VARIANTS.items():
        py, pg = result[f"{name}_cpu_ms_per_1k"]
        console.print(f"{name:9} {result[f'{name}_rows_per_s']:>9,.0f} rows/s  cpu ms / 1k rows python {py:.1f}, "
                      f"postgres {pg:.1f}  ({label})")
    console.print(f"copy, counting the first batches' rows built before the first write: "
                  f"{result['copy_with_start_rows_per_s']:,.0f} rows/s ({result['copy_start_s']:.2f} s in all)")


if __name__ == "__main__":
    main()
