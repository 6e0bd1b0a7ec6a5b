"""What bounds SubmitFeedback: the feedback window, also for a turn found only in the stored
conversations."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.pb.parley.v1 import response_pb2
from services.common.redis_client import create_redis
from tests.conftest import rpc_error

QUESTION = "How much does the Plus plan cost?"


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


@pytest.fixture(scope="module")
async def redis_client(stack):
    """A Redis client of this module's own (each engine's batched writer keeps a pooled connection)."""
    client = create_redis(stack.redis_url)
    yield client
    await client.aclose()


async def _until(probe, what: str, timeout: float = 30.0):
    for _ in range(int(timeout / 0.1)):
        if found := await probe():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


async def test_a_turn_found_only_in_the_stored_conversations_is_rated_within_the_feedback_window(
        served, shop, redis_client, pg, events):
    async with served(feedback_window_seconds=60) as s:
        old, recent = [await s.stub.Chat(ask(shop, QUESTION, session_id=f"window-{i}"), timeout=10) for i in range(2)]
        for reply in (old, recent):   # stored by the stream worker, then its Redis record gone
            await _until(lambda: pg.fetchval("SELECT 1 FROM conversations WHERE request_id = $1", reply.request_id),
                         "no conversations row for the turn")
        await s.engine.drain()
        await redis_client.delete(f"parley:req:{old.request_id}", f"parley:req:{recent.request_id}")
        await pg.execute("UPDATE conversations SET occurred_at = occurred_at - interval '2 minutes' "
                         "WHERE request_id = $1", old.request_id)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=shop.secret, request_id=old.request_id, rating=1), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.NOT_FOUND
        ok = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=recent.request_id, rating=-1), timeout=10)
    assert (await events.feedback_for(recent.request_id)).event_id == ok.event_id

