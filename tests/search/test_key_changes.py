"""Revocation and rotation that do not commit: the cache tombstone written before the change goes again,
so the unchanged secret keeps working; one that committed, or a concurrent change's, stays."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest

from services.common.errors import Unauthenticated
from services.common.product_keys import TOMBSTONE, KeyValidator
from services.common.redis_client import create_redis
from services.search import keys
from tests.conftest import RUN_ID


class _Connection:
    """A pooled connection whose statement that changes the key fails, or whose transaction commits
    and then reports a lost connection (the reply of the COMMIT never came)."""

    def __init__(self, conn, how: str) -> None:
        self._conn, self._how = conn, how

    def __getattr__(self, name):
        return getattr(self._conn, name)

    async def fetchrow(self, query, *args, **kwargs):
        if self._how == "update fails" and query.lstrip().startswith("UPDATE product_keys"):
            raise asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
        return await self._conn.fetchrow(query, *args, **kwargs)

    @contextlib.asynccontextmanager
    async def transaction(self):
        async with self._conn.transaction():
            yield
        if self._how == "commit reply lost":
            raise ConnectionResetError("connection lost after COMMIT was sent")


class _Pool:
    """The test's pool for one key change; `before_query` runs before each query on the pool itself
    (not on a connection it lends)."""

    def __init__(self, pool: asyncpg.Pool, how: str, before_query=None) -> None:
        self._pool, self._how, self._before_query = pool, how, before_query

    @contextlib.asynccontextmanager
    async def acquire(self):
        async with self._pool.acquire() as conn:
            yield _Connection(conn, self._how)

    def __getattr__(self, name):
        call = getattr(self._pool, name)
        if self._before_query is None or not callable(call):
            return call

        async def queried(*args, **kwargs):
            await self._before_query()
            return await call(*args, **kwargs)
        return queried


@contextlib.asynccontextmanager
async def _validator(pg, stack):
    client = create_redis(stack.redis_url)
    try:
        yield KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=0, default_rate=1000, default_burst=1000)
    finally:
        await client.aclose()


async def _key(pg, suffix: str) -> tuple[str, str]:
    key, secret = await keys.create_key(pg, name=f"Test {suffix}", key_id=f"t-{RUN_ID}-{suffix}-{uuid.uuid4().hex[:4]}")
    return key.id, secret


async def _revoke(pool, key_id: str, before_change):
    return await keys.revoke_key(pool, key_id, before_change)


async def _rotate(pool, key_id: str, before_change):
    return await keys.rotate_key(pool, key_id, before_change)


@pytest.mark.parametrize("change", [_revoke, _rotate], ids=["revoke", "rotate"])
async def test_a_change_that_fails_leaves_the_secret_working(pg, stack, change):
    key_id, secret = await _key(pg, "change-fails")
    async with _validator(pg, stack) as validator:
        await validator.admit(secret)                          # cached in Redis, as on a busy key
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await change(_Pool(pg, "update fails"), key_id, validator.cache.forbid)
        assert (await validator.admit(secret)).id == key_id
        assert (await validator.validate(secret)).id == key_id
        assert await validator.cache.last_known(keys.hash_secret(secret)) is not None  # for PostgreSQL outages


@pytest.mark.parametrize("change", [_revoke, _rotate], ids=["revoke", "rotate"])
async def test_a_change_whose_commit_reply_was_lost_keeps_its_tombstone(pg, stack, change):
    """The COMMIT went through and only its reply was lost: PostgreSQL refuses the secret, and so does
    the cache, so a validator that read the key just before cannot cache it again."""
    key_id, secret = await _key(pg, "commit-lost")
    async with _validator(pg, stack) as validator:
        await validator.admit(secret)
        with pytest.raises(ConnectionResetError):
            await change(_Pool(pg, "commit reply lost"), key_id, validator.cache.forbid)
        assert await validator.cache.get(keys.hash_secret(secret)) == TOMBSTONE
        with pytest.raises(Unauthenticated):
            await validator.admit(secret)


async def test_a_concurrent_revocation_keeps_its_tombstone_when_a_failed_change_lifts_its_own(pg, stack):
    """A rotation fails; a revocation waiting for the key's row takes it, writes its tombstone and has
    not committed yet when the failed rotation looks whether the secret still works (it does) and
    lifts its tombstone: the revocation's stays, so the revoked secret is refused at once everywhere."""
    key_id, secret = await _key(pg, "concurrent")
    key_hash = keys.hash_secret(secret)
    revocation_forbade, rotation_done = asyncio.Event(), asyncio.Event()
    async with _validator(pg, stack) as validator:
        await validator.admit(secret)

        async def revocation_forbid(h: bytes) -> None:
            await validator.cache.forbid(h)
            revocation_forbade.set()
            await asyncio.wait_for(rotation_done.wait(), 10)   # holding the row until the rotation is done

        checked = []

        async def after_rotation_failed() -> None:              # its check of the secret, before the lift
            await asyncio.wait_for(revocation_forbade.wait(), 10)
            checked.append(await pg.fetchval("SELECT revoked_at IS NULL FROM product_keys WHERE id = $1", key_id))

        rotation_forbade = asyncio.Event()

        async def rotation_forbid(h: bytes) -> None:
            await validator.cache.forbid(h)
            rotation_forbade.set()

        rotation = asyncio.create_task(
            keys.rotate_key(_Pool(pg, "update fails", after_rotation_failed), key_id, rotation_forbid))
        await asyncio.wait_for(rotation_forbade.wait(), 10)
        revocation = asyncio.create_task(keys.revoke_key(pg, key_id, revocation_forbid))
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await rotation
        rotation_done.set()
        await revocation
        assert checked[:1] == [True], "the failed rotation looked before the revocation committed"
        assert await validator.cache.get(key_hash) == TOMBSTONE
        with pytest.raises(Unauthenticated):
            await validator.admit(secret)
