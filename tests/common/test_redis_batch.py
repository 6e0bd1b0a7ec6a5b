"""AutoPipeline against the real Redis: concurrent commands share round trips, each caller gets
its own reply or error, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ResponseError

from services.common.redis_batch import AutoPipeline
from services.common.redis_client import create_redis


async def test_concurrent_commands_share_pipelines_and_get_their_own_replies(stack):
    client = create_redis(stack.redis_url)
    batch = AutoPipeline(client)
    pipelines = 0
    exchange = batch._exchange

    async def counting(connection, commands):
        nonlocal pipelines
        pipelines += 1
        return await exchange(connection, commands)

    batch._exchange = counting
    prefix = f"test:autopipe:{uuid.uuid4().hex[:8]}"
    await client.set(f"{prefix}:text", "not a number")
    try:
        replies = await asyncio.gather(*(batch.execute("INCRBY", f"{prefix}:n{i % 5}", i) for i in range(100)),
                                       return_exceptions=True)
        with pytest.raises(ResponseError, match="not an integer"):
            await batch.execute("INCR", f"{prefix}:text")  # an error reaches only its caller
        assert await batch.execute("GET", f"{prefix}:n0") == str(sum(range(0, 100, 5))).encode()
    finally:
        await client.delete(*(f"{prefix}:n{i}" for i in range(5)), f"{prefix}:text")
        await client.aclose()
    # Each caller's INCRBY reply is its key's running total at that point, in the order sent.
    totals = [0] * 5
    for i, reply in enumerate(replies):
        totals[i % 5] += i
        assert reply == totals[i % 5]
    assert pipelines <= 4  # 100 + 2 commands in a handful of round trips, not 102


async def test_a_script_redis_forgot_is_loaded_again(stack):
    client = create_redis(stack.redis_url)
    script = client.register_script(f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}")
    batch = AutoPipeline(client)
    try:
        first = await batch.evalsha(script, ["k"], ["a"])  # never loaded: NOSCRIPT, load, run
        assert first[:2] == [b"k", b"a"]
        assert await batch.evalsha(script, ["k2"], ["b"]) == [b"k2", b"b", first[2]]
        await client.script_flush()   # forgotten again, its arguments made only when the batch is sent
        assert await batch.evalsha(script, ["k3"], lambda: ["c"]) == [b"k3", b"c", first[2]]
    finally:
        await client.aclose()


async def test_a_connection_redis_closed_is_replaced(stack):
    client = create_redis(stack.redis_url)
    batch = AutoPipeline(client)
    prefix = f"test:autopipe:{uuid.uuid4().hex[:8]}"
    try:
        own = await batch.execute("CLIENT", "ID")
        assert await client.execute_command("CLIENT", "KILL", "ID", own) == 1
        # The killed connection is found broken on the next write and replaced (the client's retry).
        assert await batch.execute("SET", f"{prefix}:k", "v") is True
        assert await batch.execute("CLIENT", "ID") != own
        assert await batch.execute("GET", f"{prefix}:k") == b"v"
    finally:
        await client.delete(f"{prefix}:k")
        await client.aclose()


async def test_close_hands_the_kept_connection_back_to_the_pool(stack):
    """An owner done with a shared client gives the pipeline's connection back (tests serve many
    engines on one client: each kept one for good, and the pool ran out)."""
    client = create_redis(stack.redis_url)
    in_use = client.connection_pool._in_use_connections
    try:
        batch = AutoPipeline(client)
        key = f"test:{uuid.uuid4().hex}"
        assert await batch.execute("SET", key, "1", "EX", 10)
        assert len(in_use) == 1
        await batch.close()
        assert len(in_use) == 0
        assert await batch.execute("GET", key) == b"1"      # used again: takes a connection again
        await batch.close()
        assert len(in_use) == 0
    finally:
        await client.aclose()
