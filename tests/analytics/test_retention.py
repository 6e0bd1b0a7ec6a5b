"""Retention of the analytics tables, on a database of its own (a run deletes every tenant's old rows, and
other tests store turns stamped long ago in the shared one): old rows go in batches, fresh rows, pending
feedback and other tables stay, one worker at a time runs it, and a worker keeps storing turns meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from bench.harness import free_port
from services.analytics.settings import AnalyticsSettings
from services.analytics.stream import retention as retention_module
from services.analytics.stream.retention import Retention
from services.common import db
from services.common.topics import create_all_topics
from services.settings import Settings
from tests.analytics.test_stream import now_turn, producer, wait_for
from tests.analytics.test_stream_start import worker_process

# Rows of `days` days ago (plus i seconds): conversations, or feedback.
INSERT_TURNS = """
INSERT INTO conversations (event_id, product_key_id, session_id, request_id, occurred_at, message, answer, strategy,
                           model, cache_status, total_ms, ttft_ms, search_ms, llm_ms, tokens_in, tokens_out, cost_usd)
SELECT $1 || '-' || i, $2, 's', $1 || '-r-' || i, now() - make_interval(days => $3) + i * interval '1 second',
       'a question with personal data', 'an answer', 'FAQ', 'm', 'MISS', 1, 1, 1, 1, 1, 1, 0
FROM generate_series(1, $4) AS i
"""
INSERT_FEEDBACK = """
INSERT INTO feedback_events (event_id, product_key_id, request_id, occurred_at, rating, pending)
SELECT $1 || '-f-' || i, $2, $1 || '-r-' || i, now() - make_interval(days => $3) + i * interval '1 second', 1, $5
FROM generate_series(1, $4) AS i
"""
INSERT_METRICS = """
INSERT INTO metrics_minute (product_key_id, minute, strategy, model, turns)
SELECT $1, date_trunc('minute', now() - make_interval(days => $2)) + i * interval '1 minute', 'FAQ', 'm', 1
FROM generate_series(1, $3) AS i
"""


@pytest.fixture(scope="module")
async def own_db(stack: Settings) -> AsyncIterator[str]:
    """A database of its own, migrated; dropped at the end."""
    name = f"parley_retention_{uuid.uuid4().hex[:8]}"
    base, _, _ = stack.postgres_dsn.rpartition("/")
    admin = await asyncpg.connect(stack.postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"{base}/{name}"
    await db.migrate(dsn)
    yield dsn
    admin = await asyncpg.connect(stack.postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(own_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(own_db, min_size=1, max_size=4)
    yield p
    await p.close()


def deleted(table: str) -> float:
    return REGISTRY.get_sample_value("parley_worker_retention_deleted_total", {"table": table}) or 0.0


async def count(pool, table: str, key: str) -> int:
    return await pool.fetchval(f"SELECT count(*) FROM {table} WHERE product_key_id = $1", key)


async def test_old_rows_are_deleted_in_batches_and_the_rest_is_kept(pool):
    key, other = f"ret-{uuid.uuid4().hex[:6]}", f"ret-other-{uuid.uuid4().hex[:6]}"
    await pool.execute(INSERT_TURNS, key + "-old", key, 120, 2_500)
    await pool.execute(INSERT_TURNS, key + "-edge", key, 91, 10)
    await pool.execute(INSERT_TURNS, key + "-new", key, 89, 10)       # 89 days: kept
    await pool.execute(INSERT_TURNS, other, other, 1, 5)
    await pool.execute(INSERT_FEEDBACK, key + "-old", key, 100, 300, False)
    await pool.execute(INSERT_FEEDBACK, key + "-pend", key, 100, 3, True)   # still looked for: kept
    await pool.execute(INSERT_FEEDBACK, key + "-new", key, 3, 7, False)
    await pool.execute(INSERT_METRICS, key, 500, 1_200)
    await pool.execute(INSERT_METRICS, key, 300, 60)
    await pool.execute("INSERT INTO stream_offsets (consumer_group, topic, partition, next_offset) "
                       "VALUES ($1, 't', 0, 7)", key)
    before = {t: deleted(t) for t in ("conversations", "feedback_events", "metrics_minute")}
    statements = []

    class Counting(Retention):
        async def _delete_older(self, conn, t, cutoff):
            def log(q) -> None:
                if "DELETE" in q.query:
                    statements.append(t.table)

            conn.add_query_logger(log)
            try:
                return await super()._delete_older(conn, t, cutoff)
            finally:
                conn.remove_query_logger(log)

    run = await Counting(pool, turns_days=90, metrics_days=400, batch_rows=500, batch_pause=0).run()

    assert not run.skipped
    assert run.deleted == {"conversations": 2_510, "feedback_events": 300, "metrics_minute": 1_200}
    assert await count(pool, "conversations", key) == 10
    assert await pool.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1 AND "
                               "event_id LIKE '%-new-%'", key) == 10
    assert await count(pool, "conversations", other) == 5
    assert await count(pool, "feedback_events", key) == 10                       # 3 pending + 7 fresh
    assert await pool.fetchval("SELECT count(*) FROM feedback_events WHERE product_key_id = $1 AND pending", key) == 3
    assert await count(pool, "metrics_minute", key) == 60
    assert await pool.fetchval("SELECT next_offset FROM stream_offsets WHERE consumer_group = $1", key) == 7
    after = {t: deleted(t) for t in before}
    assert {t: after[t] - before[t] for t in before} == run.deleted
    # In batches of at most 500 rows: 2,510 turns take at least 6 statements.
    assert statements.count("conversations") >= 6, statements

    again = await Retention(pool, turns_days=90, metrics_days=400).run()
    assert again.deleted == {"conversations": 0, "feedback_events": 0, "metrics_minute": 0}
    # 0 keeps a table's rows: nothing is deleted, nothing is locked.
    assert (await Retention(pool, turns_days=0, metrics_days=0).run()).deleted == {}


async def test_the_delete_reads_the_time_index_and_deletes_by_tid(pool):
    for target in (retention_module.CONVERSATIONS, retention_module.FEEDBACK_EVENTS, retention_module.METRICS_MINUTE):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")   # on a near-empty table the plan would be a scan
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + retention_module.delete_batch_sql(target).replace("$1", "now() - interval '8 days'")
                .replace("$2", "5000")))
        assert "Tid Scan" in plan and target.brin_index in plan, plan


async def test_two_runs_at_once_delete_each_row_once(pool):
    key = f"ret2-{uuid.uuid4().hex[:6]}"
    await pool.execute(INSERT_TURNS, key, key, 200, 3_000)
    # Slow batches, so the second run starts while the first holds the lock.
    first = Retention(pool, turns_days=90, metrics_days=0, batch_rows=100, batch_pause=0.02)
    second = Retention(pool, turns_days=90, metrics_days=0, batch_rows=100, batch_pause=0.02)
    running = asyncio.ensure_future(first.run())
    await wait_for(lambda: _below(pool, key, 3_000), timeout=30, interval=0.01)
    other = await asyncio.wait_for(second.run(), timeout=30)
    done = await asyncio.wait_for(running, timeout=60)
    assert other.skipped and other.deleted == {}
    assert done.deleted["conversations"] == 3_000
    assert await count(pool, "conversations", key) == 0
    # Without the lock (a second worker after the first's run), the same rows are not deleted twice
    # and the two do not wait on each other for good.
    await pool.execute(INSERT_TURNS, key + "-b", key, 200, 2_000)
    a = Retention(pool, turns_days=90, metrics_days=0, batch_rows=100, batch_pause=0)
    b = Retention(pool, turns_days=90, metrics_days=0, batch_rows=100, batch_pause=0)
    cutoff = await pool.fetchval("SELECT now() - interval '90 days'")
    async with pool.acquire() as c1, pool.acquire() as c2:
        n1, n2 = await asyncio.wait_for(asyncio.gather(
            a._delete_older(c1, retention_module.CONVERSATIONS, cutoff),
            b._delete_older(c2, retention_module.CONVERSATIONS, cutoff)), timeout=60)
    assert n1 + n2 == 2_000 and await count(pool, "conversations", key) == 0


async def _below(pool, key: str, n: int) -> bool:
    return await count(pool, "conversations", key) < n


def test_a_turns_retention_shorter_than_a_replay_reaches_is_refused_naming_the_setting():
    for days in (1, 7, 7.9):
        with pytest.raises(ValueError, match="retention_turns_days"):
            AnalyticsSettings(retention_turns_days=days)
        with pytest.raises(ValueError, match="retention_metrics_days"):
            AnalyticsSettings(retention_metrics_days=days)
    assert AnalyticsSettings(retention_turns_days=8, retention_metrics_days=0).retention_turns_days == 8
    with pytest.raises(ValueError, match="retention_turns_days"):   # the pending feedback's horizon, longer
        AnalyticsSettings(feedback_pending_horizon_seconds=10 * 86400, retention_turns_days=9)
    proc = subprocess.run([sys.executable, "-m", "services.analytics.stream"], capture_output=True, timeout=60,
                          env={**os.environ, "PARLEY_RETENTION_TURNS_DAYS": "7"})
    assert proc.returncode != 0 and b"PARLEY_RETENTION_TURNS_DAYS" in proc.stderr, proc.stderr[-2000:]


async def test_a_worker_keeps_storing_turns_while_its_retention_deletes(stack, test_env, own_db, pool):
    """A worker whose retention runs every second deletes 60,000 old turns in batches of 200 while it
    stores the turns sent meanwhile: every one of them is stored, the old ones are gone, and its
    counter says how many."""
    run = uuid.uuid4().hex[:6]
    ns = Settings(topic_namespace=f".ret-{run}", kafka_bootstrap=stack.kafka_bootstrap)
    await create_all_topics(ns)
    key = f"ret-live-{run}"
    old = 60_000
    await pool.execute(INSERT_TURNS, key + "-old", key + "-old", 150, old)
    port = free_port()
    env = {**test_env, "PARLEY_TOPIC_NAMESPACE": ns.topic_namespace, "PARLEY_WORKER_APP_ID": f"parley-ret-{run}",
           "PARLEY_WORKER_METRICS_PORT": str(port), "PARLEY_POSTGRES_DSN": own_db,
           "PARLEY_RETENTION_INTERVAL_SECONDS": "1", "PARLEY_RETENTION_BATCH_ROWS": "200", "PARLEY_LOG_JSON": "false"}
    sent, seen_during = 0, []
    with worker_process(env) as proc:
        p = await producer(ns)
        try:
            for _ in range(600):   # 20 turns every 25 ms, while the old rows are deleted
                for _ in range(20):
                    await p.send(ns.topic("chat_turns"), now_turn(key).SerializeToString(), key=key.encode())
                    sent += 1
                await asyncio.sleep(0.025)
                if sent % 400 == 0:
                    seen_during.append((await count(pool, "conversations", key + "-old"),
                                        await count(pool, "conversations", key)))
                if sent >= 4_000 and await count(pool, "conversations", key + "-old") == 0:
                    break
            await p.flush()
        finally:
            await p.stop()
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]

        async def all_stored() -> bool:
            return await count(pool, "conversations", key) == sent

        assert await wait_for(all_stored, timeout=90), (await count(pool, "conversations", key), sent)
        assert await wait_for(lambda: _gone(pool, key + "-old"), timeout=90)
        assert await pool.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key) == sent
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
        found = re.search(r'parley_worker_retention_deleted_total\{table="conversations"\} (\S+)', text)
        assert found and float(found.group(1)) == old, text[-2000:]
    # The worker stored turns while the old rows were still being deleted.
    assert any(0 < left < old and stored > 0 for left, stored in seen_during), seen_during


async def _gone(pool, key: str) -> bool:
    return await count(pool, "conversations", key) == 0
