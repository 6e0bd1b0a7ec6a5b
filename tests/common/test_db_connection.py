"""db.connection against the real PostgreSQL: a statement cut short by its timeout (or its caller gone)
closes its connection instead of handing it back, as the release would wait for the statement's
cancellation for as long as PostgreSQL does not answer; the pool goes on with new connections."""

from __future__ import annotations

import asyncio

import pytest

from services.common import db


async def test_a_statement_cut_short_closes_its_connection_and_the_pool_goes_on(stack):
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    try:
        with pytest.raises(TimeoutError):
            async with db.connection(pool, 2) as conn:
                cut = conn.get_server_pid()
                await conn.execute("SELECT pg_sleep(5)", timeout=0.2)
        pids: list[int] = []

        async def caller_gone() -> None:
            async with db.connection(pool, 2) as conn:
                pids.append(conn.get_server_pid())
                await conn.execute("SELECT pg_sleep(5)")

        task = asyncio.create_task(caller_gone())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.connection(pool, 2) as conn:
            assert conn.get_server_pid() not in (cut, *pids), "a connection cut short went back to the pool"
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
