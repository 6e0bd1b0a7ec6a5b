"""Retention of crawl jobs (the crawl worker's, services/scraper/jobs.py), on a database of its own: jobs
finished past their retention go in batches, queued and running jobs stay whatever their age, one run at a
time. (Here beside the analytics retention tests, whose database it shares.)"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from services.scraper import jobs
from services.scraper.worker import RETENTION_DELETED
from tests.analytics.test_retention import own_db, pool  # noqa: F401 - fixtures

INSERT_JOBS = """
INSERT INTO crawl_jobs (id, product_key_id, request, state, created_at, finished_at)
SELECT $1 || '-' || i, $2, '{}'::jsonb, $3, now() - make_interval(days => $4), now() - make_interval(days => $5)
FROM generate_series(1, $6) AS i
"""


async def test_jobs_finished_past_their_retention_are_deleted_and_unfinished_ones_kept(pool):  # noqa: F811
    key = f"crawl-ret-{uuid.uuid4().hex[:6]}"
    await pool.execute("INSERT INTO product_keys (id, name, key_hash) VALUES ($1, $1, $2)", key,
                       hashlib.sha256(key.encode()).digest())
    for state in ("done", "failed", "cancelled"):
        await pool.execute(INSERT_JOBS, f"{key}-old-{state}", key, state, 45, 40, 400)
        await pool.execute(INSERT_JOBS, f"{key}-new-{state}", key, state, 45, 10, 2)
    await pool.execute(INSERT_JOBS, f"{key}-queued", key, "queued", 100, 100, 3)     # never started
    await pool.execute(INSERT_JOBS, f"{key}-running", key, "running", 100, 100, 3)   # whatever finished_at says
    counted_before = RETENTION_DELETED.labels("crawl_jobs")._value.get()
    statements = []

    async with pool.acquire() as conn:   # another worker's run holds the lock: this one leaves it to it
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", jobs.CRAWL_JOBS_RETENTION_LOCK)
        try:
            assert await jobs.delete_finished(pool, 30 * 86400) is None
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", jobs.CRAWL_JOBS_RETENTION_LOCK)

    deleted = await jobs.delete_finished(pool, 30 * 86400, batch_rows=500, pause=0,
                                         on_batch=lambda n: (statements.append(n),
                                                             RETENTION_DELETED.labels("crawl_jobs").inc(n)))
    assert deleted == 1_200 and statements == [500, 500, 200]
    assert RETENTION_DELETED.labels("crawl_jobs")._value.get() - counted_before == 1_200
    left = dict(await pool.fetch("SELECT state, count(*) FROM crawl_jobs WHERE product_key_id = $1 GROUP BY 1", key))
    assert left == {"done": 2, "failed": 2, "cancelled": 2, "queued": 3, "running": 3}

    # Two runs at once: one deletes, the other finds the lock taken; every row deleted once.
    await pool.execute(INSERT_JOBS, f"{key}-again", key, "done", 45, 40, 1_000)
    a, b = await asyncio.gather(jobs.delete_finished(pool, 30 * 86400, batch_rows=100),
                                jobs.delete_finished(pool, 30 * 86400, batch_rows=100))
    assert sorted([a or 0, b or 0]) in ([0, 1_000],)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + jobs._DELETE_FINISHED, 86400.0, 5000))
    assert "crawl_jobs_finished_idx" in plan, plan
