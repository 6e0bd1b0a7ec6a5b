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
