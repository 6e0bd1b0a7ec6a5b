"""The synthetic load keys: secrets of the process that loaded them, never the well-known strings they
once had (which admitted a million calls a second to anyone, in whatever database was configured)."""

from __future__ import annotations

import contextlib

import pytest

from services.common.errors import Unauthenticated
from services.common.product_keys import KeyValidator, cache_key
from services.common.redis_client import create_redis
from services.search import keys, synthetic

WELL_KNOWN = "pk_synthetic-load-key-000"


@contextlib.asynccontextmanager
async def _validator(pg, stack):
    client = create_redis(stack.redis_url)
    try:
        yield KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=0, default_rate=20,
                           default_burst=40), client
    finally:
        await client.aclose()


async def test_a_load_refuses_the_well_known_secret_even_where_it_is_cached(pg, stack):
    await synthetic.ensure_corpus(pg, keys=1, chunks_per_key=1000, vectors=False)    # the key exists (reused)
    async with _validator(pg, stack) as (validator, client):
        # A database loaded by an earlier version, whose secret some replica has cached since (over
        # the tombstone an earlier run of this test left).
        await pg.execute("UPDATE product_keys SET key_hash = $2 WHERE id = $1", synthetic.key_id(0),
                         keys.hash_secret(WELL_KNOWN))
        await client.delete(cache_key(keys.hash_secret(WELL_KNOWN)))
        await validator.admit(WELL_KNOWN)
        await synthetic.ensure_corpus(pg, keys=1, chunks_per_key=1000, vectors=False, key_cache=validator.cache)
        with pytest.raises(Unauthenticated):
            await validator.admit(WELL_KNOWN)
        with pytest.raises(Unauthenticated):
            await validator.validate(WELL_KNOWN)
        assert (await validator.admit(synthetic.secret(0))).id == synthetic.key_id(0)   # this process's works


async def test_each_process_loads_its_own_secrets(pg, stack, monkeypatch):
    async with _validator(pg, stack) as (validator, _):
        await synthetic.ensure_corpus(pg, keys=1, chunks_per_key=1000, vectors=False, key_cache=validator.cache)
        ours = synthetic.secret(0)
        assert ours != WELL_KNOWN and len(ours) == len(keys.new_secret())
        assert (await validator.validate(ours)).settings["rate_limit_per_second"] == 1_000_000
        # Another process (another seed) loads: its secret works from then on, and this one no longer.
        monkeypatch.setattr(synthetic, "_SEED", b"another process" * 2)
        theirs = synthetic.secret(0)
        assert theirs != ours
        await synthetic.ensure_corpus(pg, keys=1, chunks_per_key=1000, vectors=False, key_cache=validator.cache)
        assert (await validator.validate(theirs)).id == synthetic.key_id(0)
        with pytest.raises(Unauthenticated):
            await validator.validate(ours)
    # Left with a secret nobody knows, rather than one a test wrote down.
    monkeypatch.undo()
    await synthetic.ensure_corpus(pg, keys=1, chunks_per_key=1000, vectors=False)
