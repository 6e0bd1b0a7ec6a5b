"""Product keys while PostgreSQL is away: a key PostgreSQL knew goes on with its last record read
(so its cached answers are still given) once its cached record expired; a secret revoked or rotated
away does not, nor does one never seen."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from bench.harness import free_port
from services.common.errors import Unauthenticated, Unavailable
from services.common.product_keys import LAST_PREFIX, KeyValidator, hash_secret
from services.common.redis_client import create_redis
from services.search.keys import create_key
from tests.conftest import RUN_ID

pytestmark = pytest.mark.integration


def _validator(client, pool) -> KeyValidator:
    return KeyValidator(client, lambda: pool, ttl_seconds=0.5, local_seconds=0, default_rate=100,
                        default_burst=100)


async def test_a_known_key_is_admitted_with_its_last_record_while_postgres_is_away(stack, pg):
    client = create_redis(stack.redis_url)
    # A pool of a PostgreSQL that is not there: every query fails to connect, as during an outage.
    dead = await asyncpg.create_pool(f"postgresql://parley@127.0.0.1:{free_port()}/parley", min_size=0,
                                     max_size=1, timeout=2)
    try:
        known, known_secret = await create_key(pg, name="outage", key_id=f"t-{RUN_ID}-out-{uuid.uuid4().hex[:4]}")
        revoked, revoked_secret = await create_key(pg, name="outage-revoked",
                                                   key_id=f"t-{RUN_ID}-outr-{uuid.uuid4().hex[:4]}")
        up = _validator(client, pg)
        assert (await up.admit(known_secret)).id == known.id          # read from PostgreSQL, cached
        assert (await up.admit(revoked_secret)).id == revoked.id
        assert await client.get(LAST_PREFIX + hash_secret(revoked_secret).hex()) is not None
        await up.cache.forbid(hash_secret(revoked_secret))            # as RevokeProductKey does first
        assert await client.get(LAST_PREFIX + hash_secret(revoked_secret).hex()) is None
        await asyncio.sleep(0.7)                                       # the cached record expired

        down = _validator(client, dead)
        assert (await down.admit(known_secret)).id == known.id
        assert (await down.validate(known_secret)).id == known.id      # feedback's check too
        with pytest.raises(Unauthenticated):
            await down.admit(revoked_secret)
        with pytest.raises(Unavailable):                               # never seen: cannot be told
            await down.admit("pk_" + uuid.uuid4().hex)

        # A read that raced the revocation cannot bring a last-known record back.
        await up.cache.put(hash_secret(revoked_secret), await up.validate(known_secret))
        assert await client.get(LAST_PREFIX + hash_secret(revoked_secret).hex()) is None
    finally:
        await dead.close()
        await client.aclose()


async def test_a_frozen_redis_costs_the_first_calls_its_timeout_and_the_others_nothing(stack, pg):
    """A Redis that accepts connections and never answers (stopped with SIGSTOP, a lost network path):
    the calls that meet it first wait out the socket timeout, then one call a second tries it while
    the others validate in PostgreSQL at once; a refused secret is still refused."""
    from services.common.redis_client import SOCKET_TIMEOUT_SECONDS

    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)                 # read nothing, answer nothing, keep the connection open

    frozen = await asyncio.start_server(silent, "127.0.0.1", 0)
    client = create_redis(f"redis://127.0.0.1:{frozen.sockets[0].getsockname()[1]}/0")
    try:
        key, secret = await create_key(pg, name="frozen", key_id=f"t-{RUN_ID}-frz-{uuid.uuid4().hex[:4]}")
        validator = KeyValidator(client, lambda: pg, ttl_seconds=60, local_seconds=0, default_rate=1000,
                                 default_burst=1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        calls = 0
        while loop.time() - started < 3.0:
            call = validator.admit(secret) if calls % 2 else validator.validate(secret)
            assert (await call).id == key.id
            calls += 1
        elapsed = loop.time() - started
        # Every call waiting for Redis would make one call per SOCKET_TIMEOUT_SECONDS at most; with one
        # probe a second, about four probes wait in 3 s and every other call goes straight on.
        assert calls > 4 * elapsed / SOCKET_TIMEOUT_SECONDS, (calls, elapsed)
        assert validator.health.down
        with pytest.raises(Unauthenticated):
            await validator.admit("pk_" + uuid.uuid4().hex)
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        frozen.close()
