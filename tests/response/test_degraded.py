"""The response engine when something fails: Redis away, a cancelled breaker trial, a lock that
expired, a retried feedback, text PostgreSQL cannot store."""

from __future__ import annotations

import asyncio
import uuid

from services.common.pb.parley.v1 import common_pb2, response_pb2
from services.common.redis_client import create_redis
from services.response.answer import build_engine, build_store
from services.response.extractive import ExtractiveAnswerer
from services.response.llm import Answer, AnswerRequest, LLMError
from services.response.resilience import ResilientLLM


class _HangingClient:
    """An LLM that never answers, until the call is cancelled."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def stream(self, model, messages, *, max_tokens, deadline):
        self.called.set()
        await asyncio.sleep(3600)
        yield ""


def _half_open(client) -> tuple[ResilientLLM, AnswerRequest]:
    """An LLM whose breaker for model "m" is open with a reset of 0 s (the next call is the half-open
    trial), falling back to extractive answers; and a question for it."""
    llm = ResilientLLM(client, ExtractiveAnswerer(), timeout_seconds=60, max_attempts=1, max_retry_wait_seconds=1,
                       breaker_failures=1, breaker_reset_seconds=0.0, fallback_extractive=True,
                       prompt_token_budget=2000, max_completion_tokens=100)
    llm.breaker("m").failure()
    return llm, AnswerRequest(message="How much is it?", key_name="Shop", instructions="", strategy="KNOWLEDGE",
                              passages=[])


async def test_a_cancelled_trial_call_does_not_keep_the_breaker_open_for_good():
    client = _HangingClient()
    llm, request = _half_open(client)

    async def consume() -> None:
        async for _ in llm.stream(request, ("m",), asyncio.get_running_loop().time() + 60):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(client.called.wait(), timeout=5)
    task.cancel()  # the caller went away during the trial
    await asyncio.gather(task, return_exceptions=True)
    assert llm.breaker("m").allow(), "the trial slot stayed taken: the breaker refuses every call for good"


class _RejectingClient:
    """An LLM that answers every request with an HTTP 400 (e.g. "context too long")."""

    calls = 0

    async def stream(self, model, messages, *, max_tokens, deadline):
        self.calls += 1
        raise LLMError("rejected", "the LLM rejected the request (HTTP 400): context too long")
        yield ""


async def test_a_trial_call_the_model_rejects_closes_the_breaker():
    """Groq is back and refuses the one half-open trial (a 4xx other than 429): it answered, so later
    calls must reach it again (they fall back to extractive meanwhile, each one)."""
    client = _RejectingClient()
    llm, request = _half_open(client)
    for _ in range(3):
        answers = [p async for p in llm.stream(request, ("m",), asyncio.get_running_loop().time() + 60)
                   if isinstance(p, Answer)]
        assert answers and answers[-1].model == "extractive"
    assert client.calls == 3, "after the rejected trial the breaker refused every call to the model"
    assert llm.breaker("m").state == "closed"


class _ScribblingClient:
    """An LLM whose answer carries NUL, terminal escapes (one cut between two pieces) and a bidi override."""

    async def stream(self, model, messages, *, max_tokens, deadline):
        for piece in ["It costs \x00", "\x1b[3", "1m12 EUR\x1b[0m", " a month\u202e.", "\x1b"]:
            yield piece


async def test_what_the_model_writes_is_made_storable_before_it_is_streamed():
    llm = ResilientLLM(_ScribblingClient(), ExtractiveAnswerer(), timeout_seconds=60, max_attempts=1,
                       max_retry_wait_seconds=1, breaker_failures=1, breaker_reset_seconds=1,
                       fallback_extractive=False, prompt_token_budget=2000, max_completion_tokens=100)
    request = AnswerRequest(message="How much is it?", key_name="Shop", instructions="", strategy="KNOWLEDGE",
                            passages=[])
    out = [p async for p in llm.stream(request, ("m",), asyncio.get_running_loop().time() + 60)]
    pieces, answer = [p for p in out if isinstance(p, str)], out[-1]
    assert isinstance(answer, Answer)
    assert "".join(pieces) == answer.text == "It costs 12 EUR a month."
    assert all(pieces), "no empty piece is streamed"


async def test_the_single_flight_lock_is_never_released_from_under_another_owner(stack, redis_client, settings):
    """Our lock expires while we work and another replica takes it; our release must leave theirs.
    The test injects the other replica's SET right after the first command our release sends: a
    GET-then-DEL release deletes the other lock, an atomic one does not."""
    store = build_store(settings, redis_client)
    name = f"lock-test-{uuid.uuid4().hex}"
    key = f"parley:sf:{name}"
    lock = await store.try_lock(name, 30)
    assert lock is not None and lock is not True
    assert await store.try_lock(name, 30) is None  # held

    original = redis_client.execute_command
    armed = True

    async def racing(*args, **options):
        nonlocal armed
        reply = await original(*args, **options)
        if armed and any(a in (key, key.encode()) for a in args[1:]):
            armed = False
            await original("SET", key, "other-replica")  # ours expired; another replica locked it
        return reply

    redis_client.execute_command = racing
    try:
        await store.unlock(lock)
    finally:
        redis_client.execute_command = original
    assert await redis_client.get(key) == b"other-replica"
    await redis_client.delete(key)


async def test_without_redis_answers_continue_uncached(stack, settings, search_client, producer, shop_key, events):
    dead = create_redis("redis://127.0.0.1:9/0")  # nothing listens: every command is refused
    try:
        engine = build_engine(settings, search_client, build_store(settings, dead), producer)
        replies = []
        for _ in range(3):
            replies.append(await engine.chat(response_pb2.ChatRequest(
                product_key=shop_key.secret, message="How long does shipping take?", session_id="s-no-redis"),
                timeout=10))
        await engine.drain()
    finally:
        await dead.aclose()
    assert all(r.answer and r.strategy == common_pb2.STRATEGY_KNOWLEDGE for r in replies), replies
    assert [r.cache_status for r in replies] == [common_pb2.CACHE_STATUS_MISS] * 3
    assert engine._store.health.down
    assert (await events.turn(replies[-1].request_id)).product_key_id == shop_key.id


async def test_a_retried_feedback_is_the_same_event(served, shop):
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret,
                                                           message="How much does the Plus plan cost?"), timeout=10)
        feedback = response_pb2.FeedbackRequest(product_key=shop.secret, request_id=reply.request_id, rating=1,
                                                comment="clear")
        first = await s.stub.SubmitFeedback(feedback, timeout=10)
        retried = await s.stub.SubmitFeedback(feedback, timeout=10)
        changed = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=reply.request_id, rating=-1, comment="clear"), timeout=10)
    # The stream worker inserts a feedback event only once per event_id: the retry is not counted again.
    assert first.event_id == retried.event_id
    assert changed.event_id != first.event_id


async def test_nul_and_lone_surrogates_never_reach_the_turn_event(served, shop, events):
    async with served() as s:
        reply = await s.stub.Chat(response_pb2.ChatRequest(
            product_key=shop.secret, message="How much does the\x00 Plus plan cost?"), timeout=10)
    event = await events.turn(reply.request_id)
    assert event.message == "How much does the Plus plan cost?"
    assert "\x00" not in event.answer and reply.answer
