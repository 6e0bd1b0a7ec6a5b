"""The PostgreSQL pool without the reset on release: one round trip per statement, open transactions still undone."""

from __future__ import annotations

from services.common import db


async def test_a_pool_without_reset_sends_no_statement_on_release(stack):
    # The search service's pool: Pool.fetch returns once its own statement is answered. With the reset,
    # each release sends asyncpg's reset statement (RESET ALL ...) and waits for it.
    sent = {}
    for reset_session in (True, False):
        pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=1, reset_session=reset_session)
        try:
            queries: list[str] = []
            async with pool.acquire() as conn:
                conn.add_query_logger(lambda record: queries.append(record.query))
            queries.clear()
            for _ in range(3):
                assert await pool.fetchval("SELECT 1") == 1
            sent[reset_session] = queries
        finally:
            await pool.close()
    assert sent[False] == ["SELECT 1"] * 3
    assert len(sent[True]) == 6 and all("RESET ALL" in q for q in sent[True][1::2])


async def test_a_pool_without_reset_still_rolls_back_an_open_transaction(stack):
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=1, reset_session=False)
    try:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("SET LOCAL statement_timeout = '1234ms'")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SHOW statement_timeout") != "1234ms"
    finally:
        await pool.close()
