"""What bounds SubmitFeedback: the feedback window, also for a turn found only in the stored
conversations, and the key's rate limit, as for a chat turn."""

from __future__ import annotations

import uuid

import grpc
import pytest

from services.common.pb.parley.v1 import response_pb2, search_pb2
from tests.conftest import RUN_ID, TestKey, rpc_error
from tests.response.conftest import ask
from tests.response.test_feedback_stored_turns import _until

QUESTION = "How much does the Plus plan cost?"


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


async def test_feedback_past_the_keys_rate_limit_is_refused_with_a_retry_hint(served, search, admin):
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Test feedback rate", id=f"t-{RUN_ID}-fbrate-{uuid.uuid4().hex[:4]}",
        settings=search_pb2.KeySettings(rate_limit_per_second=0.01, rate_limit_burst=3)), metadata=admin, timeout=10)
    key = TestKey(reply.key.id, reply.product_key)
    async with served() as s:
        turn = await s.stub.Chat(ask(key, "hello"), timeout=10)                 # the first token
        for rating in (1, -1):                                                  # the other two
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=key.secret, request_id=turn.request_id, rating=rating), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                product_key=key.secret, request_id=turn.request_id, rating=1), timeout=10)
        err = rpc_error(info)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.details()
        trailers = dict(err.trailing_metadata())
        assert int(trailers["retry-after-ms"]) > 0 and int(trailers["retry-after"]) >= 1
        with pytest.raises(grpc.aio.AioRpcError) as info:                      # and the bucket is the chat's
            await s.stub.Chat(ask(key, "hello again"), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A malformed rating is told so, bucket empty or not: it is refused before it is charged.
        for bad in (response_pb2.FeedbackRequest(product_key=key.secret, request_id=turn.request_id, rating=0),
                    response_pb2.FeedbackRequest(product_key=key.secret, request_id=" ", rating=1)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(bad, timeout=10)
            assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT, rpc_error(info).details()


async def test_a_request_id_with_a_control_character_names_no_turn(served, shop):
    async with served() as s:
        turn = await s.stub.Chat(ask(shop, QUESTION, session_id="nul-id"), timeout=10)
        for request_id in (turn.request_id[:8] + "\x00" + turn.request_id[8:], turn.request_id + "\x1b[0m"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                    product_key=shop.secret, request_id=request_id, rating=1), timeout=10)
            assert rpc_error(info).code() == grpc.StatusCode.NOT_FOUND, rpc_error(info).details()


async def test_a_request_id_in_another_spelling_of_a_recent_turns_names_no_turn_at_once(served, shop):
    """An id in upper case (or with an underscore, or another script's digits: int() reads them all) was
    read as a turn of a moment ago not recorded yet: UNAVAILABLE "retry shortly" for 10 s. No id made
    here is written so: NOT_FOUND at once."""
    async with served() as s:
        turn = await s.stub.Chat(ask(shop, QUESTION, session_id="spelt-id"), timeout=10)
        digits = turn.request_id.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
        for request_id in (turn.request_id.upper(), turn.request_id[:12] + "_" + turn.request_id[13:], digits):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                    product_key=shop.secret, request_id=request_id, rating=1), timeout=10)
            assert rpc_error(info).code() == grpc.StatusCode.NOT_FOUND, (request_id, rpc_error(info).details())
