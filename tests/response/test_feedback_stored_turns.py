"""Feedback for a turn whose record Redis lost (restarted empty, flushed, evicted): the turn is found
where the analytics stream worker stored it, and the feedback is the same event as before."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from services.common.errors import Unavailable
from services.common.pb.parley.v1 import response_pb2
from services.common.redis_client import create_redis
from services.response.admission import Admission
from services.response.answer import build_engine, build_store, feedback_event_id
from tests.conftest import rpc_error

QUESTION = "How much does the Plus plan cost?"


async def _until(probe, what: str, timeout: float = 30.0):
    for _ in range(int(timeout / 0.1)):
        if found := await probe():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


async def _lose_record(s, redis_client, pg, request_id: str) -> None:
    """The turn stored by the stream worker, then its Redis record gone."""
    await _until(lambda: pg.fetchval("SELECT 1 FROM conversations WHERE request_id = $1", request_id),
                 "no conversations row for the turn")
    await s.engine.drain()
    await redis_client.delete(f"parley:req:{request_id}")


async def test_feedback_for_a_turn_redis_lost_is_found_in_the_stored_conversations(
        served, shop, key_b, redis_client, pg, events):
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=QUESTION), timeout=10)
        await _lose_record(s, redis_client, pg, reply.request_id)
        ok = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=reply.request_id, rating=1, comment="clear"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:   # the turn is still the shop's alone
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=key_b.secret, request_id=reply.request_id, rating=1), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.NOT_FOUND
    feedback = await events.feedback_for(reply.request_id)
    assert ok.event_id == feedback.event_id == feedback_event_id(reply.request_id, 1)
    assert (feedback.product_key_id, feedback.message, feedback.rating, feedback.comment) == (
        shop.id, QUESTION, 1, "clear")
    # Counted by the stream worker under the rated turn (not pending, not UNKNOWN).
    await _until(lambda: pg.fetchval("SELECT 1 FROM feedback_events WHERE event_id = $1 AND NOT pending",
                                     ok.event_id), "the feedback was not counted under its turn")


async def test_feedback_is_unavailable_when_redis_lost_the_turn_and_postgres_cannot_be_reached(
        served, shop, redis_client, pg):
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=QUESTION), timeout=10)
        await _lose_record(s, redis_client, pg, reply.request_id)
    # PostgreSQL cannot be reached (the key itself is still known from Redis): worth a retry, not NOT_FOUND.
    async with served(postgres_dsn="postgresql://parley:parley@127.0.0.1:9/parley") as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=shop.secret, request_id=reply.request_id, rating=1), timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.UNAVAILABLE, rpc_error(info).details()
    assert "turn" in rpc_error(info).details()   # the turn's lookup, not the key's
    assert dict(rpc_error(info).trailing_metadata()).get("retry-after")


async def test_feedback_while_redis_cannot_be_reached_is_checked_in_postgres(
        served, shop, redis_client, pg, settings, search_client, producer):
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=QUESTION), timeout=10)
        await _lose_record(s, redis_client, pg, reply.request_id)
    dead = create_redis("redis://127.0.0.1:9/0")  # nothing listens: every command is refused
    engine = build_engine(settings, search_client, build_store(settings, dead), producer)
    engine.admission = Admission(settings, dead)
    try:
        event_id = await engine.feedback(shop.secret, reply.request_id, -1, "")
        assert event_id == feedback_event_id(reply.request_id, -1)
        # A turn PostgreSQL does not hold may still be in the Redis that could not be asked.
        with pytest.raises(Unavailable):
            await engine.feedback(shop.secret, "0" * 32, -1, "")
    finally:
        await engine.drain()
        await engine.admission.close()
        await dead.aclose()


async def test_redis_keeps_a_turns_record_a_day_and_feedback_after_it_is_checked_in_postgres(
        served, shop, redis_client, pg, events):
    """The record's TTL is PARLEY_TURN_RECORD_SECONDS (a day), not the week of the feedback window: a
    week of records is gigabytes of Redis. Past it, the stored turn answers (here: a 1 s record)."""
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=QUESTION), timeout=10)
        await s.engine.drain()
        assert 0 < await redis_client.ttl(f"parley:req:{reply.request_id}") <= 24 * 3600
    async with served(turn_record_seconds=1) as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=QUESTION), timeout=10)
        await _until(lambda: pg.fetchval("SELECT 1 FROM conversations WHERE request_id = $1", reply.request_id),
                     "no conversations row for the turn")
        await _until(lambda: _gone(redis_client, reply.request_id), "the record outlived its second")
        ok = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=reply.request_id, rating=-1), timeout=10)
    assert (await events.feedback_for(reply.request_id)).event_id == ok.event_id


async def _gone(redis_client, request_id: str) -> bool:
    return not await redis_client.exists(f"parley:req:{request_id}")


def _request_id_made(seconds_ago: float) -> str:
    """A request id as the response service makes them (a version-7 UUID), made `seconds_ago`."""
    return f"{int((time.time() - seconds_ago) * 1000) << 80 | 7 << 76 | 0b10 << 62 | 12345:032x}"


async def test_a_turn_of_a_moment_ago_stored_nowhere_yet_is_unavailable_not_not_found(served, shop):
    """Another replica answered it a moment ago and has not written its record yet (it does in the
    background), nor has the stream worker stored it: worth a retry. An older id is NOT_FOUND."""
    async with served() as s:
        with pytest.raises(grpc.aio.AioRpcError) as fresh:
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=shop.secret, request_id=_request_id_made(0.5), rating=1), timeout=10)
        assert rpc_error(fresh).code() == grpc.StatusCode.UNAVAILABLE
        assert dict(rpc_error(fresh).trailing_metadata())["retry-after"] == "1"
        with pytest.raises(grpc.aio.AioRpcError) as old:
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=shop.secret, request_id=_request_id_made(60), rating=1), timeout=10)
        assert rpc_error(old).code() == grpc.StatusCode.NOT_FOUND
