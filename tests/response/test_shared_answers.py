"""A shared answer (single-flight, in process and across replicas through the Redis lock) as its
callers see it when one of them goes away or the answer fails: each caller's own outcome, and no
lock left behind. The real `groq` client against the local Groq-compatible server."""

from __future__ import annotations

import asyncio

import pytest

from services.common.pb.parley.v1 import response_pb2
from services.common.redis_client import create_redis
from tests.response.conftest import SMALL

QUESTION = "How much does the Plus plan cost?"


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


@pytest.fixture(scope="module")
async def redis_client(stack):
    """A Redis client of this module's own (each engine's batched writer keeps a pooled connection)."""
    client = create_redis(stack.redis_url)
    yield client
    await client.aclose()


async def test_the_same_question_while_an_abandoned_flight_cleans_up_is_answered(served, llm, shop, events):
    """The caller of a streamed answer goes away; while its flight releases the Redis lock, the same
    question is asked again: it gets an answer (from a flight of its own), not the old flight's
    cancellation."""
    llm.token_delay = 0.2
    async with served() as s:
        store = s.engine._store
        real_unlock = store.unlock
        unlocking = asyncio.Event()

        async def slow_unlock(lock) -> None:
            unlocking.set()
            await asyncio.sleep(1.0)
            await real_unlock(lock)

        store.unlock = slow_unlock
        call = s.stub.ChatStream(ask(shop, QUESTION), timeout=30)
        assert (await call.read()).delta
        call.cancel()
        await asyncio.wait_for(unlocking.wait(), 10)
        reply = await s.stub.Chat(ask(shop, QUESTION), timeout=20)
    assert reply.model == SMALL and reply.answer.startswith("Answer from")
    assert (await events.turn(reply.request_id)).error_code == ""
