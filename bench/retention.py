"""How fast the stream worker's retention deletes old chat turns, on a database of its own.

    .venv/bin/python -m bench.retention [--old 864000] [--fresh 1250000] [--batch 5000]

Needs the local PostgreSQL (`make up`). Creates a database, migrates it, fills `conversations` with
`--old` turns past the default retention (90 days) and `--fresh` recent ones (generate_series, in
chunks, with progress), then runs `Retention.run` once (as the worker does: batches of `--batch`
rows, each its own transaction, the BRIN ranges summarised again at the end) and reports the rows
deleted, the seconds and the rows per second, and the mean time a batch held. The database is dropped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg

from services.analytics.stream.retention import Retention
from services.common import db
from services.settings import Settings

_INSERT = """
INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer, strategy,
                           model, cache_status, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd)
SELECT $1 || '-' || i, 'bench-' || (i % 100), 's', $1 || '-r-' || i,
       now() - make_interval(days => $2) + i * interval '1 second',
       'How long does delivery to Ireland take?', 'Three to five working days.', 'FAQ', 'm', 'MISS',
       120, 40, 8, 90, 300, 40, 0.0001
FROM generate_series(1, $3) AS i
"""
CHUNK = 100_000


async def _fill(pool: asyncpg.Pool, rows: int, days_ago: int, what: str) -> None:
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        await pool.execute(_INSERT, f"{what}-{done}", days_ago, n)
        done += n
        print(f"  {what}: {done:,} of {rows:,} rows", flush=True)


async def run(args: argparse.Namespace) -> None:
    dsn = Settings().postgres_dsn
    name = f"parley_bench_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    own = f"{dsn.rpartition('/')[0]}/{name}"
    try:
        await db.migrate(own)
        pool = await db.create_pool(own, min_size=1, max_size=4)
        try:
            await _fill(pool, args.old, 120, "old")
            await _fill(pool, args.fresh, 1, "fresh")
            await pool.execute("VACUUM ANALYZE conversations")
            size = await pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('conversations'))")
            retention = Retention(pool, turns_days=90, metrics_days=0, batch_rows=args.batch, batch_pause=0)
            started = time.perf_counter()
            result = await retention.run()
            seconds = time.perf_counter() - started
            left = await pool.fetchval("SELECT count(*) FROM conversations")
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    deleted = result.deleted.get("conversations", 0)
    batches = max(1, -(-deleted // args.batch))
    print(f"conversations: {args.old + args.fresh:,} rows ({size}); deleted {deleted:,} in {seconds:.2f} s "
          f"({deleted / seconds:,.0f} rows/s), {batches} batches of {args.batch:,}, "
          f"{1000 * seconds / batches:.1f} ms a batch on average (BRIN summaries included); {left:,} rows left")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=int, default=864_000, help="turns past retention")
    parser.add_argument("--fresh", type=int, default=1_250_000, help="turns within retention")
    parser.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
