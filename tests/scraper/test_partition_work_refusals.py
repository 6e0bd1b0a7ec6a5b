"""Which failures of a crawl request set it aside on the dead-letter topic (services/scraper/worker.py
`_PartitionWork`): only those of the request itself. PostgreSQL refusing for its own state (read-only, a
lock it could not get) passes, and the request is taken again from its offset; a value it refuses would
be refused every time. The refusals are PostgreSQL's own, from the real server; the consumer only
records what the loop asks of it (tests/scraper/test_partition_work.py)."""

from __future__ import annotations

import asyncpg
import pytest

from services.scraper import worker as crawl_worker
from services.scraper.worker import _PartitionWork
from tests.scraper.test_partition_work import T0, T1, T2, Consumer, Record, Worker, settle

pytestmark = pytest.mark.integration


async def _refused_by(pg: asyncpg.Pool, statement: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as exc_info:
        await pg.execute(statement)
    return exc_info.value


async def _read_only_refusal(pg: asyncpg.Pool) -> asyncpg.PostgresError:
    """SQLSTATE 25006, as from a server that is read-only (a standby after a failover)."""
    async with pg.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError) as exc_info:
            async with conn.transaction(readonly=True):
                await conn.execute("UPDATE crawl_jobs SET state = state WHERE false")
    return exc_info.value


async def _lock_refusal(pg: asyncpg.Pool) -> asyncpg.PostgresError:
    """SQLSTATE 55P03: a lock another session holds, not granted within lock_timeout."""
    lock = 0x5a7e_10c4
    async with pg.acquire() as holder, pg.acquire() as waiter:
        await holder.execute("SELECT pg_advisory_lock($1)", lock)
        try:
            with pytest.raises(asyncpg.PostgresError) as exc_info:
                async with waiter.transaction():
                    await waiter.execute("SET LOCAL lock_timeout = '20ms'")
                    await waiter.execute("SELECT pg_advisory_xact_lock($1)", lock)
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", lock)
    return exc_info.value


async def test_only_a_refusal_of_the_request_itself_is_dead_lettered(pg, monkeypatch):
    monkeypatch.setattr(crawl_worker, "RETRY_SECONDS", 0)
    read_only, locked = await _read_only_refusal(pg), await _lock_refusal(pg)
    bad_value = await _refused_by(pg, "SELECT 1 / 0")
    assert (read_only.sqlstate, locked.sqlstate, bad_value.sqlstate) == ("25006", "55P03", "22012")
    consumer, worker = Consumer([T0, T1, T2]), Worker()
    work = _PartitionWork(consumer, worker, max_jobs=4)
    worker.fail.update({b"read-only": read_only, b"locked": locked, b"bad-value": bad_value})
    for tp, value in ((T0, b"read-only"), (T1, b"locked"), (T2, b"bad-value")):
        worker.gate(value).set()
        work.add(tp, [Record(value, 5)])
    await settle()
    assert [(v, o) for v, _, o in worker.dead] == [(b"bad-value", 5)], worker.dead
    assert sorted(consumer.seeks) == [(T0, 5), (T1, 5)], "taken again from their offsets"
    assert consumer.commits == [(T2, 6)], "only the dead-lettered request is committed past"
    await work.close(1)
