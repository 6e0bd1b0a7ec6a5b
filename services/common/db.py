"""PostgreSQL: the asyncpg pool and versioned migrations applied by one command (`parley migrate`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import asyncpg

from services.common.errors import RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, Unavailable

logger = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent migrators (several pods starting at once).
_MIGRATION_LOCK = 7_215_310_001


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20, reset_session: bool = True,
                      init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
                      statement_seconds: float | None = None) -> asyncpg.Pool:
    """`reset_session=False`: a connection is not reset on release. asyncpg's reset is a statement
    (advisory locks, cursors, LISTEN and settings undone) that `Pool.fetch` waits for before it returns,
    a second round trip for every statement; a pool whose users set none of that can skip it (an open
    transaction is still rolled back). `init` runs on each new connection. `statement_seconds`: the
    sessions' statement_timeout, which PostgreSQL keeps itself: a statement waiting for a lock ends there
    even when its caller has gone (a closed connection is not noticed by a backend waiting for a lock)."""
    settings = {"statement_timeout": str(max(1, round(statement_seconds * 1000)))} if statement_seconds else None
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30, init=init,
                                     reset=None if reset_session else _keep_session, server_settings=settings)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool, wait_seconds: float) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `pool`, waited for `wait_seconds` at most: with every connection taken (a flood of
    calls, PostgreSQL not answering) the call is UNAVAILABLE with a retry hint (another instance may
    serve it), not held until its client gives up."""
    try:
        conn = await pool.acquire(timeout=wait_seconds)
    except TimeoutError:
        raise Unavailable(f"no PostgreSQL connection within {wait_seconds:g} s (the pool's {pool.get_max_size()} "
                          "are busy, or PostgreSQL does not answer); retry shortly",
                          trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)}) from None
    try:
        yield conn
    except asyncpg.QueryCanceledError:
        # PostgreSQL's statement_timeout (create_pool's statement_seconds): a table locked, or a server
        # too busy to finish; the connection is fine.
        raise Unavailable("PostgreSQL ended the statement at its time limit (a table locked, or the server busy); "
                          "retry shortly", trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)}) from None
    except (TimeoutError, asyncio.CancelledError):
        # A statement cut short (its timeout, the caller gone): the release would wait for its
        # cancellation, as long as PostgreSQL does not answer (frozen, a lost network path). Closed
        # instead; the pool opens another when one is needed.
        conn.terminate()
        raise
    finally:
        await pool.release(conn)


# Below the health probe's 3 s (services/common/grpc_server.py), so the check reports its own reason.
PING_SECONDS = 2.0


async def ping(pool: asyncpg.Pool, timeout_seconds: float = PING_SECONDS) -> None:
    """Readiness check of PostgreSQL: `SELECT 1` on a connection of `pool`, answered within
    `timeout_seconds` or TimeoutError, also when PostgreSQL accepts and never answers (its processes
    stopped, a lost network path). A connection whose check does not end (timed out, or the probe
    cancelled it) is terminated, not handed back: asyncpg's release of a connection interrupted in a
    query first waits for the cancel request it sends to the postmaster, which a frozen postmaster
    never answers (with `Pool.fetchval`, the check of a PostgreSQL frozen for 20 s ended only when it
    was thawed, 20 s later). The pool connects anew on a later acquire."""
    try:
        async with asyncio.timeout(timeout_seconds):
            conn = await pool.acquire()
            try:
                await conn.fetchval("SELECT 1")
            except BaseException:
                conn.terminate()
                raise
            # Bounded even when the wait is cut short: the release goes on shielded from cancellation,
            # and a reset that does not end within the timeout terminates the connection.
            await pool.release(conn, timeout=timeout_seconds)
    except TimeoutError:
        raise TimeoutError(f"PostgreSQL did not answer within {timeout_seconds:g} s") from None


@contextlib.asynccontextmanager
async def advisory_lock(pool: asyncpg.Pool, key: int) -> AsyncIterator[asyncpg.Connection | None]:
    """A connection of `pool` holding the session advisory lock `key` for the block, or None when
    another session holds it (one replica at a time runs a periodic job). A connection that cannot give
    the lock back is closed, not returned to the pool holding it (a pool that keeps sessions would
    otherwise skip every later run)."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            yield None
            return
        try:
            yield conn
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except BaseException:
                conn.terminate()
                raise


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in services/common/migrations, in order."""
    found = []
    for entry in resources.files("services.common").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


async def migrate(dsn: str) -> list[int]:
    """Apply the migrations not applied yet, each in its own transaction; returns their versions."""
    conn = await asyncpg.connect(dsn)
    applied: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            logger.info("applied migration %04d_%s", version, name)
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied
