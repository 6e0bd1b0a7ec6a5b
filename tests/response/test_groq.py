"""Answers from Groq (the real `groq` client against a local Groq-compatible server): routing,
streaming, cancellation, the answer cache, single-flight, retries, the breaker, fallbacks, events."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from bench.fake_llm import Behaviour
from services.common.pb.parley.v1 import common_pb2, response_pb2, search_pb2
from services.response.cache import PREFIX, ResponseStore, question_hash
from tests.conftest import RUN_ID, TestKey, rpc_error
from tests.response.conftest import LARGE, SMALL


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


async def test_short_question_is_answered_by_the_small_model_with_cited_sources(served, llm, shop, events):
    async with served() as s:
        reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?", session_id="g1"), timeout=10)
    assert reply.model == SMALL and reply.answer.startswith(f"Answer from {SMALL}")
    assert reply.strategy == common_pb2.STRATEGY_KNOWLEDGE
    assert [s.id for s in reply.sources] and f"[{reply.sources[0].id}]" in reply.answer
    assert reply.cache_status == common_pb2.CACHE_STATUS_MISS
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    t = reply.timings
    assert t.total_ms >= t.search_ms > 0 and t.llm_ms >= t.ttft_ms > 0
    (seen,) = llm.requests
    assert seen.model == SMALL and seen.stream
    system, passages, question = seen.messages
    assert system["role"] == "system" and "support assistant of Test llm-" in system["content"]  # the key's name
    assert passages["role"] == "user" and f"[{reply.sources[0].id}]" in passages["content"]
    assert "49 euros" in passages["content"] and "49 euros" not in system["content"]  # data, not instructions
    assert question == {"role": "user", "content": "How much does the Plus plan cost?"}
    event = await events.turn(reply.request_id)
    assert event.model == SMALL and event.product_key_id == shop.id and event.session_id == "g1"
    assert event.cost_usd > 0 and event.usage.completion_tokens == reply.usage.completion_tokens
    assert event.timings.total_ms > 0 and event.cache_status == common_pb2.CACHE_STATUS_MISS
    assert event.source_ids == [x.id for x in reply.sources] and event.error_code == ""


async def test_several_questions_go_to_the_large_model(served, llm, shop):
    async with served() as s:
        reply = await s.stub.Chat(ask(shop, "How much is the Plus plan? Does the Plus plan include support?"),
                                  timeout=10)
    assert reply.model == LARGE and [r.model for r in llm.requests] == [LARGE], (reply, llm.requests)


async def test_second_identical_question_is_a_cache_hit_and_no_cache_bypasses(served, llm, shop, events):
    question = "How much does the Plus plan cost?"
    async with served() as s:
        first = await s.stub.Chat(ask(shop, question), timeout=10)
        again = await s.stub.Chat(ask(shop, "  " + question.upper() + " "), timeout=10)  # normalised: same entry
        fresh = await s.stub.Chat(ask(shop, question, no_cache=True), timeout=10)
    assert first.cache_status == common_pb2.CACHE_STATUS_MISS
    assert again.cache_status == common_pb2.CACHE_STATUS_HIT
    assert again.answer == first.answer and again.model == first.model and list(again.sources) == list(first.sources)
    assert again.usage.completion_tokens == 0 and again.timings.search_ms == 0  # no Plan, no LLM
    assert fresh.cache_status == common_pb2.CACHE_STATUS_BYPASS
    assert llm.count() == 2
    hit = await events.turn(again.request_id)
    assert hit.cache_status == common_pb2.CACHE_STATUS_HIT and hit.cost_usd == 0 and hit.timings.total_ms > 0
    assert (await events.turn(fresh.request_id)).cache_status == common_pb2.CACHE_STATUS_BYPASS


async def test_follow_up_uses_the_session_and_is_not_cached(served, llm, shop):
    session = f"sess-{uuid.uuid4().hex[:6]}"
    async with served() as s:
        await s.stub.Chat(ask(shop, "How much does the Plus plan cost?", session_id=session), timeout=10)
        follow = await s.stub.Chat(ask(shop, "And does it include support?", session_id=session), timeout=10)
    assert follow.cache_status == common_pb2.CACHE_STATUS_BYPASS
    assert follow.model == LARGE  # follow-ups with context go to the large model
    roles = [m["role"] for m in llm.requests[-1].messages]
    assert roles == ["system", "user", "assistant", "user", "user"]  # ..., the passages, the question
    assert llm.requests[-1].messages[2]["content"].startswith(f"Answer from {SMALL}")


async def test_a_session_goes_on_after_its_key_is_rotated(served, llm, search, admin):
    """A session belongs to the product key, not to its secret: a widget that picks up the rotated
    secret mid-conversation keeps the conversation."""
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name=f"Test rot-{RUN_ID}", id=f"t-{RUN_ID}-sess-rot-{uuid.uuid4().hex[:4]}"), metadata=admin, timeout=10)
    key = TestKey(reply.key.id, reply.product_key)
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title="Plans",
        text="The Plus plan costs 49 euros per year and includes priority support."), metadata=admin, timeout=10)
    session = f"sess-{uuid.uuid4().hex[:6]}"
    async with served() as s:
        await s.stub.Chat(ask(key, "How much does the Plus plan cost?", session_id=session), timeout=10)
        rotated = await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin,
                                                timeout=10)
        await s.stub.Chat(ask(TestKey(key.id, rotated.product_key), "And does it include support?",
                              session_id=session), timeout=10)
    messages = llm.requests[-1].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert messages[1]["content"].endswith("How much does the Plus plan cost?")


async def test_fifty_identical_questions_in_flight_share_one_llm_call(served, llm, shop, events):
    llm.first_token_delay = 0.5  # long enough for every caller to join the flight
    question = "How much does the Plus plan cost?"
    async with served() as s:
        replies = await asyncio.gather(*(s.stub.Chat(ask(shop, question, session_id=f"sf{i}"), timeout=20)
                                         for i in range(50)))
    assert llm.count() == 1, [(r.at, r.model, r.outcome, r.finished) for r in llm.requests]
    statuses = [r.cache_status for r in replies]
    assert statuses.count(common_pb2.CACHE_STATUS_MISS) == 1
    assert set(statuses) <= {common_pb2.CACHE_STATUS_MISS, common_pb2.CACHE_STATUS_SHARED, common_pb2.CACHE_STATUS_HIT}
    assert len({r.answer for r in replies}) == 1 and len({r.request_id for r in replies}) == 50
    shared = next(r for r in replies if r.cache_status == common_pb2.CACHE_STATUS_SHARED)
    assert (await events.turn(shared.request_id)).cost_usd == 0  # the tokens are counted once


async def test_stream_sends_the_first_piece_before_the_llm_finishes(served, llm, shop):
    llm.token_delay = 0.1
    async with served() as s:
        chunks = []
        async for chunk in s.stub.ChatStream(ask(shop, "How much does the Plus plan cost?"), timeout=20):
            if not chunks:
                assert llm.requests[0].finished is None  # the LLM is still writing
            chunks.append(chunk)
    assert llm.requests[0].finished is not None
    assert len(chunks) > 5 and chunks[-1].HasField("final")
    final = chunks[-1].final
    assert "".join(c.delta for c in chunks[:-1]) == final.answer
    assert final.model == SMALL and final.sources and final.timings.ttft_ms > 0


async def test_a_client_that_cancels_stops_the_llm_stream(served, llm, shop):
    llm.token_delay = 0.3  # 12+ pieces: several seconds if nobody stops it
    async with served() as s:
        call = s.stub.ChatStream(ask(shop, "How much does the Plus plan cost?"), timeout=30)
        first = await call.read()
        assert first.delta
        call.cancel()
        for _ in range(100):
            if llm.requests[0].outcome == "disconnected":
                break
            await asyncio.sleep(0.05)
    assert llm.requests[0].outcome == "disconnected"


async def test_rate_limit_is_retried_after_retry_after(served, llm, shop):
    llm.then(Behaviour("429", retry_after=0.4))
    async with served() as s:
        reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
    assert reply.model == SMALL
    first, second = llm.requests
    assert (first.outcome, second.outcome) == ("429", "ok")
    assert second.at - first.at >= 0.4


async def test_server_errors_fall_back_from_large_to_small(served, llm, shop):
    llm.then(Behaviour("500", model=LARGE), Behaviour("500", model=LARGE))
    async with served(llm_max_attempts=2) as s:
        reply = await s.stub.Chat(ask(shop, "How much is the Plus plan? Does the Plus plan include support?"),
                                  timeout=10)
    assert [(r.model, r.outcome) for r in llm.requests] == [(LARGE, "500"), (LARGE, "500"), (SMALL, "ok")]
    assert reply.model == SMALL


async def test_a_slow_llm_times_out_and_the_extractive_answerer_answers(served, llm, shop):
    llm.first_token_delay = 3.0
    async with served(llm_timeout_seconds=0.3) as s:
        reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
    assert reply.model == "extractive" and "49 euros" in reply.answer
    assert [r.model for r in llm.requests] == [SMALL]  # a timeout is not retried on the same model


async def test_a_degraded_answer_is_not_cached(served, llm, shop):
    question = "How much does the Plus plan cost?"
    llm.then(Behaviour("500"), Behaviour("500"))
    async with served(llm_max_attempts=2) as s:
        degraded = await s.stub.Chat(ask(shop, question), timeout=10)
        healed = await s.stub.Chat(ask(shop, question), timeout=10)
    assert degraded.model == "extractive"
    assert healed.model == SMALL and healed.cache_status == common_pb2.CACHE_STATUS_MISS


@pytest.mark.parametrize("kind", ["cut", "malformed"])
async def test_a_broken_stream_restarts_with_the_fallback(served, llm, shop, kind):
    llm.then(Behaviour(kind, cut_after=3))
    async with served() as s:
        chunks = [c async for c in s.stub.ChatStream(ask(shop, "How much does the Plus plan cost?"),
                                                     timeout=10)]
    restarts = [i for i, c in enumerate(chunks) if c.restart]
    assert len(restarts) == 1 and restarts[0] > 0  # some pieces had gone out before the cut
    final = chunks[-1].final
    assert final.model == "extractive" and "49 euros" in final.answer
    assert "".join(c.delta for c in chunks[restarts[0] + 1:-1]) == final.answer
    assert [r.outcome for r in llm.requests] == [kind]  # a stream that produced text is not retried


async def test_the_breaker_opens_and_spares_a_failing_llm(served, llm, shop):
    llm.reset(Behaviour("500"))
    async with served(llm_max_attempts=1, llm_breaker_failures=2, llm_breaker_reset_seconds=60) as s:
        for _ in range(4):
            reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
            assert reply.model == "extractive"
        assert s.engine.llm.breaker(SMALL).state == "open"
    assert llm.count() == 2


async def test_without_a_fallback_llm_errors_become_grpc_statuses(served, llm, shop, events):
    async with served(llm_fallback_extractive=False, llm_max_attempts=1, llm_timeout_seconds=1.5) as s:
        llm.reset(Behaviour("429", retry_after=30))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
        err = rpc_error(info)
        assert err.code() == grpc.StatusCode.UNAVAILABLE  # Groq's limit, not the key's own (RESOURCE_EXHAUSTED)
        trailers = dict(err.trailing_metadata())
        assert trailers["retry-after"] == "30"
        failed = await events.turn(trailers["x-parley-request-id"])
        assert failed.error_code == "UNAVAILABLE" and failed.product_key_id == shop.id
        assert failed.timings.search_ms > 0 and failed.timings.total_ms > 0

        llm.reset(Behaviour("500"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.UNAVAILABLE and "LLM" in rpc_error(info).details()

        llm.reset(Behaviour("ok", first_token_delay=5))
        s.engine.llm.breakers.clear()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
        assert rpc_error(info).code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_replicas_share_one_llm_call_through_the_redis_lock(served, llm, shop):
    """Two engines (as two replicas would be) with their own in-process flights, one Redis."""
    llm.first_token_delay = 0.5
    question = "How much does the Plus plan cost?"
    async with served() as one, served() as two:
        replies = await asyncio.gather(*(
            (one if i % 2 else two).stub.Chat(ask(shop, question, session_id=f"r{i}"), timeout=20) for i in range(20)))
    assert llm.count() == 1, [(r.outcome, r.model, r.finished) for r in llm.requests]
    statuses = [r.cache_status for r in replies]
    assert statuses.count(common_pb2.CACHE_STATUS_MISS) == 1
    assert statuses.count(common_pb2.CACHE_STATUS_SHARED) + statuses.count(common_pb2.CACHE_STATUS_HIT) == 19
    assert len({r.answer for r in replies}) == 1


async def test_when_a_lock_goes_without_an_answer_one_waiting_replica_answers(served, llm, shop, redis_client):
    """Another process held the question's lock and went away without caching an answer: of the
    replicas waiting on it, one takes the lock and answers, the other waits for that answer."""
    question = "How much does the Plus plan cost?"
    llm.first_token_delay = 0.3
    async with served() as one, served() as two:
        plan = await one.engine._search.plan(shop.secret, question, "", 5)
        held = f"{PREFIX}sf:{ResponseStore.answer_key(plan.product_key_id, plan.knowledge_version, question_hash(question))}"
        await redis_client.set(held, b"a process that will fail", px=1500)
        replies = await asyncio.gather(*(
            (one if i % 2 else two).stub.Chat(ask(shop, question, session_id=f"w{i}"), timeout=20) for i in range(6)))
    assert llm.count() == 1, [(r.outcome, r.model, r.finished) for r in llm.requests]
    assert len({r.answer for r in replies}) == 1 and replies[0].model == SMALL


async def test_an_answer_is_read_from_the_llm_to_its_end_while_its_caller_does_not_read(served, llm, shop):
    """A ChatStream caller that stops reading (grants no flow-control window) suspends the turn at a
    piece it sends. The LLM's stream is read to its end meanwhile, in a task of its own, so its
    connection goes back to the LLM client's pool instead of being held for as long as the call lasts."""
    llm.token_delay = 0.05
    async with served() as s:
        turn = s.engine.turn(ask(shop, "How much does the Plus plan cost?", no_cache=True))
        try:
            first = await turn.__anext__()
            assert isinstance(first, str)
            pool = s.engine.llm.client._client._client._transport._pool   # the groq client's httpx pool
            for _ in range(200):                       # no more pieces asked for meanwhile
                if llm.requests[-1].finished and pool.connections and all(c.is_idle() for c in pool.connections):
                    break
                await asyncio.sleep(0.05)
            assert llm.requests[-1].finished and all(c.is_idle() for c in pool.connections), pool.connections
            rest = [item async for item in turn]
        finally:
            await turn.aclose()
    assert isinstance(rest[-1], response_pb2.ChatResponse) and rest[-1].answer.startswith(first)
