"""Inputs at the edges of the response service: session ids and messages it must refuse, feedback
after a key rotation or sent twice, retry hints in both conventions, and the code a turn that
ran out of time is recorded with."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from services.analytics.stream.sink import insert_feedback
from services.common.errors import DeadlineExceeded
from services.common.kafka import now_timestamp
from services.common.pb.parley.v1 import events_pb2, response_pb2, search_pb2
from services.common.product_keys import cache_key, hash_secret
from services.response.answer import MAX_REQUEST_ID_CHARS, MAX_SESSION_ID_CHARS, feedback_event_id
from tests.conftest import RUN_ID, rpc_error
from tests.conftest import TestKey as Key


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


async def _turns_with_message(events, message: str, count: int, timeout: float = 10.0) -> list:
    for _ in range(int(timeout / 0.05)):
        found = [t for turns in list(events.turns.values()) for t in turns if t.message == message]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} ChatTurns for {message!r} within {timeout}s")


async def _turn_with_message(events, message: str, timeout: float = 10.0):
    return (await _turns_with_message(events, message, 1, timeout))[0]


async def test_a_session_id_longer_than_the_limit_is_refused(served, shop):
    async with served() as s:
        for session_id in ("s" * (MAX_SESSION_ID_CHARS + 1), "s" * 100_000):
            for call in (s.stub.Chat, s.stub.ChatStream):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    reply = call(ask(shop, "How much does the Plus plan cost?", session_id=session_id), timeout=10)
                    if call is s.stub.ChatStream:
                        async for _ in reply:
                            pass
                    else:
                        await reply
                err = rpc_error(info)
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "session id" in err.details()
        reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?",
                                      session_id="s" * MAX_SESSION_ID_CHARS), timeout=10)
    assert reply.answer


@pytest.mark.parametrize("message", ["\u200b", "\ufeff", "\u200c\u200d", "\u00a0", "\u2028\u2029",
                                     " \u200b\ufeff\u2060\u00a0 ", "\x00\u200b"])
async def test_a_message_of_invisible_characters_is_empty(served, shop, message):
    async with served() as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, message), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rpc_error(info).details() == "message is empty"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in s.stub.ChatStream(ask(shop, message), timeout=10):
                pass
        assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_feedback_with_the_rotated_secret_of_the_same_key_is_accepted(served, search, admin, key_b, events):
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Rotating", id=f"t-{RUN_ID}-fbrot-{uuid.uuid4().hex[:6]}"), metadata=admin, timeout=10)
    key = Key(reply.key.id, reply.product_key)
    async with served() as s:
        turn = await s.stub.Chat(ask(key, "hello"), timeout=10)
        rotated = await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin,
                                                timeout=10)
        ok = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=rotated.product_key, request_id=turn.request_id, rating=1), timeout=10)
        feedback = await events.feedback_for(turn.request_id)
        assert feedback.event_id == ok.event_id and feedback.product_key_id == key.id
        for secret, code in ((key_b.secret, grpc.StatusCode.NOT_FOUND),           # another key
                             (key.secret, grpc.StatusCode.UNAUTHENTICATED)):      # the rotated-away secret
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                    product_key=secret, request_id=turn.request_id, rating=1), timeout=10)
            assert rpc_error(info).code() == code


async def test_a_turn_counts_at_most_one_vote_of_each_kind(served, shop, pg, events):
    async with served() as s:
        turn = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
        votes = [(1, ""), (1, "great"), (f" {turn.request_id} ", 1, "really great"), (-1, "hmm"), (-1, "")]
        ids = []
        for vote in votes:
            request_id, rating, comment = vote if len(vote) == 3 else (turn.request_id, *vote)
            reply = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=shop.secret, request_id=request_id, rating=rating, comment=comment), timeout=10)
            ids.append(reply.event_id)
    assert ids[0] == ids[1] == ids[2] == feedback_event_id(turn.request_id, 1)
    assert ids[3] == ids[4] == feedback_event_id(turn.request_id, -1) != ids[0]
    await events.feedback_for(turn.request_id)
    for _ in range(100):  # the feedback sent with spaces around the request id is the turn's too
        if len(events.feedback[turn.request_id]) == len(votes):
            break
        await asyncio.sleep(0.05)
    assert len(events.feedback[turn.request_id]) == len(votes)
    # The analytics sink dedups by event id: each vote sent apart (separate batches) is stored once.
    async with pg.acquire() as conn:
        for event_id, (rating, comment) in zip(ids, [(1, ""), (1, "great"), (1, "really great"), (-1, "hmm"), (-1, "")]):
            await insert_feedback(conn, [events_pb2.Feedback(
                event_id=event_id, occurred_at=now_timestamp(), product_key_id=shop.id,
                request_id=turn.request_id, rating=rating, comment=comment)])
        rows = await conn.fetch("SELECT rating FROM feedback_events WHERE request_id = $1 ORDER BY rating",
                                turn.request_id)
    assert [r["rating"] for r in rows] == [-1, 1]


def _slow_lock(engine, seconds: float) -> None:
    """The single-flight lock takes `seconds` (a slow Redis), after the turn's key is known."""
    try_lock = engine._store.try_lock

    async def slow(name, ttl_seconds):
        await asyncio.sleep(seconds)
        return await try_lock(name, ttl_seconds)

    engine._store.try_lock = slow


async def test_a_turn_past_the_callers_deadline_is_recorded_as_deadline_exceeded(served, shop, events):
    message = f"How much does the Plus plan cost? ({uuid.uuid4().hex[:8]})"
    async with served() as s:
        _slow_lock(s.engine, 5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, message), timeout=1)
        assert rpc_error(info).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        turn = await _turn_with_message(events, message)
    assert turn.error_code == "DEADLINE_EXCEEDED" and turn.product_key_id == shop.id


async def test_an_answer_ready_only_after_the_callers_deadline_is_recorded_as_no_answer(served, shop, events):
    """A cached answer whose lookup took longer than the caller waited: nothing cancelled the turn,
    but its caller never received the answer, so it is recorded DEADLINE_EXCEEDED, not answered."""
    message = f"How much does the Plus plan cost? ({uuid.uuid4().hex[:8]})"
    async with served() as s:
        await s.stub.Chat(ask(shop, message), timeout=10)            # the answer, cached
        lookup = s.engine._store.lookup

        async def slow(*args):
            found = await lookup(*args)
            time.sleep(0.3)     # the event loop held up (a busy process): no timer cancels the turn
            return found

        s.engine._store.lookup = slow
        with pytest.raises(DeadlineExceeded):
            await s.engine.chat(ask(shop, message), timeout=0.2)
        turns = [t for t in await _turns_with_message(events, message, 2) if t.error_code]
    assert [t.error_code for t in turns] == ["DEADLINE_EXCEEDED"]


async def test_a_turn_the_caller_cancelled_is_recorded_as_cancelled(served, shop, events):
    message = f"How much does the Plus plan cost? ({uuid.uuid4().hex[:8]})"
    async with served() as s:
        _slow_lock(s.engine, 5)
        call = s.stub.ChatStream(ask(shop, message), timeout=30)
        await asyncio.sleep(1)
        call.cancel()
        turn = await _turn_with_message(events, message)
    assert turn.error_code == "CANCELLED"


async def test_feedback_as_the_first_call_of_a_process_checks_the_key_in_postgres(served, shop, redis_client):
    """A key Redis does not hold (its record expired) is read from PostgreSQL also when feedback is
    the process's first call: it used to be UNAVAILABLE until a Chat had opened the pool."""
    async with served() as s:
        turn = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
    async with served() as fresh:
        await redis_client.delete(cache_key(hash_secret(shop.secret)))
        reply = await fresh.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=turn.request_id, rating=1), timeout=10)
        assert reply.event_id == feedback_event_id(turn.request_id, 1)
    async with served() as fresh:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fresh.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=f"pk_unknown_{uuid.uuid4().hex}", request_id=turn.request_id, rating=1), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_feedback_for_an_overlong_request_id_is_invalid_not_an_oversized_error(served, shop):
    async with served() as s:
        for request_id, code in (("r" * 100_000, grpc.StatusCode.INVALID_ARGUMENT),
                                 ("r" * (MAX_REQUEST_ID_CHARS + 1), grpc.StatusCode.INVALID_ARGUMENT),
                                 ("r" * MAX_REQUEST_ID_CHARS, grpc.StatusCode.NOT_FOUND)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                    product_key=shop.secret, request_id=request_id, rating=1), timeout=10)
            assert rpc_error(info).code() == code and len(rpc_error(info).details()) < 200
