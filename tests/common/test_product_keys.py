"""Product-key admission without Redis: keys checked in PostgreSQL (a few seconds in process) and rate
limits per process; with Redis, one shared bucket that concurrent takes never overdraw."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from services.common.errors import ResourceExhausted, Unauthenticated
from services.common.pb.parley.v1 import search_pb2
from services.common.product_keys import (
    BUCKET_PREFIX,
    KeyCache,
    KeyRecord,
    KeyValidator,
    RateLimiter,
    cache_key,
    hash_secret,
    validate_key,
)
from services.common.redis_client import create_redis
from tests.conftest import RUN_ID, TestKey


def _dead_redis_url() -> str:
    """A Redis URL where nothing listens: what a service sees while Redis is stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def _key(search, admin, suffix: str, rate: float, burst: int) -> TestKey:
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name=f"Test {suffix}", id=f"t-{RUN_ID}-{suffix}-{uuid.uuid4().hex[:4]}",
        settings=search_pb2.KeySettings(rate_limit_per_second=rate, rate_limit_burst=burst)), metadata=admin, timeout=10)
    return TestKey(reply.key.id, reply.product_key)


async def test_concurrent_takes_never_exceed_the_bucket(stack):
    client = create_redis(stack.redis_url)
    try:
        limiter = RateLimiter(client)
        key = f"test-{uuid.uuid4().hex}"
        verdicts = await asyncio.gather(*(limiter.take(key, 0.001, 10) for _ in range(60)))
    finally:
        await client.aclose()
    assert sum(v.allowed for v in verdicts) == 10
    assert all(v.retry_after_seconds > 0 for v in verdicts if not v.allowed)


def _count_commands(validator: KeyValidator) -> list[tuple]:
    """The commands the validator's pipeline sends from now on."""
    sent: list[tuple] = []
    exchange = validator._batch._exchange

    async def counting(connection, commands):
        sent.extend(commands)
        return await exchange(connection, commands)

    validator._batch._exchange = counting
    return sent


async def test_concurrent_admissions_of_one_key_take_the_tokens_in_one_call_and_never_overdraw(search, admin, pg, stack):
    key = await _key(search, admin, "together", rate=0.01, burst=5)
    other = await _key(search, admin, "together2", rate=0.01, burst=2)
    client = create_redis(stack.redis_url)
    validator = KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40)
    try:
        await validator.admit(key.secret)   # cached in Redis now (one token of 5 taken)
        await validator.admit(other.secret)  # one of 2
        commands = _count_commands(validator)
        outcomes = await asyncio.gather(*(validator.admit(s) for s in [key.secret] * 20 + [other.secret] * 5),
                                        return_exceptions=True)
    finally:
        await client.aclose()
    ours, theirs = outcomes[:20], outcomes[20:]
    # In the order asked: the first 4 turns get the 4 tokens left, the others are limited with a retry-after.
    assert [getattr(o, "id", None) for o in ours[:4]] == [key.id] * 4
    assert all(isinstance(o, ResourceExhausted) and int(o.trailers["retry-after-ms"]) > 0 for o in ours[4:])
    assert [getattr(o, "id", None) for o in theirs[:1]] == [other.id]
    assert all(isinstance(o, ResourceExhausted) for o in theirs[1:])
    assert sorted(c[-1] for c in commands) == [5, 20], commands  # one script call per key, as many tokens as turns


async def test_without_redis_keys_are_checked_in_postgres_and_limited_per_process(search, admin, pg):
    key = await _key(search, admin, "noredis", rate=0.5, burst=3)
    dead = create_redis(_dead_redis_url())
    validator = KeyValidator(dead, lambda: pg, ttl_seconds=30, local_seconds=0.5, default_rate=20, default_burst=40)
    try:
        for _ in range(3):
            assert (await validator.admit(key.secret)).id == key.id
        with pytest.raises(ResourceExhausted) as info:
            await validator.admit(key.secret)
        assert int(info.value.trailers["retry-after-ms"]) > 0
        with pytest.raises(Unauthenticated):
            await validator.admit("pk_not-a-key")
        # A rotation while this replica cannot reach Redis: refused once its in-process copy expires.
        await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
        await asyncio.sleep(0.6)
        with pytest.raises(Unauthenticated):
            await validator.validate(key.secret)
    finally:
        await dead.aclose()


async def test_a_cached_key_is_admitted_in_one_round_trip_and_rotation_refuses_it(search, admin, pg, stack):
    key = await _key(search, admin, "cached", rate=1000, burst=1000)
    client = create_redis(stack.redis_url)
    validator = KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40)
    try:
        await validator.admit(key.secret)          # cached in Redis now
        calls = []
        validator._pool = lambda: calls.append(1) or pg
        start = time.perf_counter()
        for _ in range(20):
            await validator.admit(key.secret)
        assert not calls, "a cached key must not read PostgreSQL"
        assert time.perf_counter() - start < 5
        # Concurrent admissions of one secret share a round trip and a script call: 32 turns at once
        # take 32 tokens in one or two commands.
        commands = _count_commands(validator)
        records = await asyncio.gather(*(validator.admit(key.secret) for _ in range(32)))
        assert {r.id for r in records} == {key.id} and 1 <= len(commands) <= 2, commands
        assert sum(c[-1] for c in commands) == 32
        # A turn cancelled while its group waits for Redis (its client went away) leaves the others admitted.
        turns = [asyncio.ensure_future(validator.admit(key.secret)) for _ in range(6)]
        await asyncio.sleep(0)
        turns[2].cancel()
        outcomes = await asyncio.gather(*turns, return_exceptions=True)
        assert isinstance(outcomes[2], asyncio.CancelledError)
        assert [o.id for i, o in enumerate(outcomes) if i != 2] == [key.id] * 5
        await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
        with pytest.raises(Unauthenticated):
            await validator.admit(key.secret)
    finally:
        await client.aclose()



async def test_a_lingering_pipeline_gathers_turns_that_arrive_apart(search, admin, pg, stack):
    """Turns a few milliseconds apart (a busy process under a closed-loop client) share one script call
    when the pipeline lingers; without a linger each goes alone. Every turn is still admitted once."""
    key = await _key(search, admin, "linger", rate=1000, burst=1000)
    client = create_redis(stack.redis_url)
    busy = True
    lingering = KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40,
                             linger=lambda: 0.05 if busy else 0.0)
    prompt = KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40)

    async def arriving_apart(validator: KeyValidator) -> list:
        async def one(n: int):
            await asyncio.sleep(0.004 * n)
            return await validator.admit(key.secret)
        return await asyncio.gather(*(one(n) for n in range(5)))

    try:
        await lingering.admit(key.secret)
        await prompt.admit(key.secret)
        together, alone = _count_commands(lingering), _count_commands(prompt)
        assert [r.id for r in await arriving_apart(lingering)] == [key.id] * 5
        assert [r.id for r in await arriving_apart(prompt)] == [key.id] * 5
        busy = False  # a lone turn
        assert (await lingering.admit(key.secret)).id == key.id
    finally:
        await client.aclose()
    assert [c[-1] for c in together] == [5, 1], together   # five turns' tokens in one call, then the lone one
    assert [c[-1] for c in alone] == [1] * 5, alone


async def test_an_absurd_stored_rate_neither_fails_the_bucket_nor_marks_redis_down(stack):
    """A record cached with a rate from before key settings were bounded (1e-17/s: a bucket that
    takes 1e17 s to refill) is admitted and limited like any other, in Redis: the bucket's expiry is
    capped instead of overflowing PEXPIRE, which would fail the script and send the replica's every
    tenant to the per-process fallback."""
    client = create_redis(stack.redis_url)
    secret = f"pk_absurd-{uuid.uuid4().hex}"
    record = KeyRecord(id=f"test-absurd-{uuid.uuid4().hex[:8]}", name="Absurd", knowledge_version=1,
                       instructions="", website="", ts_config="english",
                       settings={"rate_limit_per_second": 1e-17, "rate_limit_burst": 1})
    # No PostgreSQL: an admission that fell back from Redis would be UNAVAILABLE, not admitted.
    validator = KeyValidator(client, lambda: None, ttl_seconds=30, local_seconds=0, default_rate=20, default_burst=40)
    try:
        await validator.cache.put(hash_secret(secret), record)
        assert (await validator.admit(secret)).id == record.id
        with pytest.raises(ResourceExhausted):
            await validator.admit(secret)
        assert validator.health.available()
        assert await client.pttl(BUCKET_PREFIX + record.id) > 0     # idle buckets still expire
        # The other way in (a record read from PostgreSQL): the same script body, no fallback either.
        limiter = RateLimiter(client)
        limiter.local.take = None       # calling it would mean Redis failed
        assert (await limiter.take(f"test-{uuid.uuid4().hex}", 1e-17, 3)).allowed
    finally:
        await client.aclose()


async def test_a_record_read_before_a_knowledge_change_is_not_cached_again_after_it(search, admin, pg, stack):
    """A validator read the key in PostgreSQL before an AddFaq committed, and caches what it read after
    the change dropped the cached record (the RPC's own drop, then its knowledge event's): the old
    knowledge version must not come back for the record TTL, or Plans (and the answers cached under
    their version) would go on with the knowledge before the change."""
    key = await _key(search, admin, "floor", rate=1000, burst=1000)
    key_hash = hash_secret(key.secret)
    read_before = await validate_key(pg, key_hash)
    added = await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you ship abroad?",
                                                         answer="To the EU only."), metadata=admin, timeout=10)
    assert added.knowledge_version > read_before.knowledge_version
    client = create_redis(stack.redis_url)
    try:
        # The current record, cached until the change's knowledge event has gone round and dropped it
        # (for 5 s at most, should the event have been quicker than this): no drop is to come after.
        await KeyCache(client, ttl_seconds=5).put(key_hash, await validate_key(pg, key_hash))
        async with asyncio.timeout(30):
            while await client.exists(cache_key(key_hash)):
                await asyncio.sleep(0.05)
        await KeyCache(client, ttl_seconds=30).put(key_hash, read_before)     # the read that raced, late
        validator = KeyValidator(client, lambda: pg, ttl_seconds=30, local_seconds=0, default_rate=20,
                                 default_burst=40)
        assert (await validator.validate(key.secret)).knowledge_version == added.knowledge_version
    finally:
        await client.aclose()
    reply = await search.Plan(search_pb2.PlanRequest(product_key=key.secret, message="Do you ship abroad?"), timeout=10)
    assert reply.knowledge_version == added.knowledge_version


async def test_a_key_check_whose_pool_is_taken_answers_unavailable_instead_of_waiting(stack, monkeypatch):
    """Redis away, a flood of secrets to check in PostgreSQL: a check that cannot get a connection of its
    pool within its bound is UNAVAILABLE (with a retry hint), not held for as long as the flood lasts."""
    import asyncpg

    from services.common import product_keys
    from services.common.errors import Unavailable

    monkeypatch.setattr(product_keys, "KEY_CHECK_ACQUIRE_SECONDS", 0.3, raising=False)
    pool = await asyncpg.create_pool(stack.postgres_dsn, min_size=1, max_size=1)
    validator = KeyValidator(create_redis("redis://127.0.0.1:1/0"), lambda: pool, ttl_seconds=30, local_seconds=0,
                             default_rate=10, default_burst=10)
    try:
        async with pool.acquire():                     # every connection of the pool taken
            with pytest.raises(Unavailable) as info:
                await asyncio.wait_for(validator.validate("pk_" + uuid.uuid4().hex), 10)
        assert info.value.trailers
    finally:
        await pool.close()


async def test_while_postgres_refuses_connections_one_check_a_second_asks_it_and_one_warning_is_logged(stack, caplog):
    """A flood of secrets no cache holds while PostgreSQL is away: each used to be a connection attempt
    and a warning line; now one check a second probes, the others are UNAVAILABLE at once."""
    import asyncpg  # noqa: PLC0415

    from services.common.errors import Unavailable  # noqa: PLC0415

    attempts = 0

    async def refuse(reader, writer):   # accepts, then closes: PostgreSQL going down under the pool
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = await asyncpg.create_pool(f"postgresql://parley@127.0.0.1:{port}/parley", min_size=0, max_size=4)
    client = create_redis(stack.redis_url)
    validator = KeyValidator(client, lambda: pool, ttl_seconds=30, local_seconds=3, default_rate=20, default_burst=40)
    caplog.set_level("WARNING", logger="services.common.redis_client")
    caplog.set_level("WARNING", logger="services.common.product_keys")
    try:
        started = time.monotonic()
        for _ in range(60):
            with pytest.raises(Unavailable):
                await validator.validate(f"pk_made-up-{uuid.uuid4().hex}")
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
        await pool.close()
        server.close()
    assert attempts <= 2 + elapsed, (attempts, elapsed)      # one probe a second
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "PostgreSQL" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def test_a_rate_limiter_without_redis_limits_per_process_and_warns_once(caplog):
    dead = create_redis(_dead_redis_url())
    limiter = RateLimiter(dead)
    caplog.set_level("WARNING", logger="services.common.redis_client")
    try:
        verdicts = [await limiter.take("key-a", 1.0, 3) for _ in range(20)]
    finally:
        await dead.aclose()
    assert [v.allowed for v in verdicts] == [True] * 3 + [False] * 17
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "limiting per process" in warnings[0].getMessage()
