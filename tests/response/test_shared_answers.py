"""A shared answer (single-flight, in process and across replicas through the Redis lock) as its
callers see it when one of them goes away or the answer fails: each caller's own outcome, and no
lock left behind. The real `groq` client against the local Groq-compatible server."""

from __future__ import annotations

import asyncio

import grpc
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


async def test_callers_of_a_failed_shared_answer_each_get_their_own_request_id(served, llm, shop, events):
    """Without the extractive fallback, an LLM that sends no first token fails the shared answer:
    each caller's error names its own turn (x-parley-request-id), whose ChatTurn says the same code."""
    llm.first_token_delay = 5.0
    async with served(llm_fallback_extractive=False, llm_max_attempts=1,
                      llm_first_token_timeout_seconds=0.5) as s:
        results = await asyncio.gather(*(s.stub.Chat(ask(shop, QUESTION, session_id=f"e{i}"), timeout=20)
                                         for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
    assert llm.count() == 1, [(r.model, r.outcome) for r in llm.requests]   # one shared answer failed
    ids = [dict(r.trailing_metadata())["x-parley-request-id"] for r in results]
    assert len(set(ids)) == 3, ids
    for error, request_id in zip(results, ids):
        assert (await events.turn(request_id)).error_code == error.code().name
