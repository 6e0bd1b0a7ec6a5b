"""Turns beyond the LLM: FAQ answers, the web strategy, feedback, limits passed through, knowledge updates."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc
import pytest

from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2, scraper_pb2, scraper_pb2_grpc, search_pb2
from services.response.web import WebPages
from tests.conftest import RUN_ID, make_key, rpc_error
from tests.conftest import TestKey as Key


def ask(key, message, **kw) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=key.secret, message=message, **kw)


async def test_faq_is_answered_with_the_stored_answer_and_no_llm(served, llm, search, admin, events):
    key = await make_key(search, admin, f"faq-{uuid.uuid4().hex[:6]}",
                         faq=[("How do I reset my password?", "Use the Forgot password link on the sign-in page.")],
                         docs=[])
    async with served() as s:
        reply = await s.stub.Chat(ask(key, "How do I reset my password?"), timeout=10)
        again = await s.stub.Chat(ask(key, "How do I reset my password?"), timeout=10)
    assert again.cache_status == common_pb2.CACHE_STATUS_HIT and again.answer == reply.answer
    assert reply.strategy == common_pb2.STRATEGY_FAQ and reply.model == "faq"
    assert reply.answer == "Use the Forgot password link on the sign-in page."
    assert len(reply.sources) == 1 and reply.sources[0].kind == "faq"
    assert llm.count() == 0
    event = await events.turn(reply.request_id)
    assert event.strategy == common_pb2.STRATEGY_FAQ and event.cost_usd == 0
    # No model wrote it: the LLM stage did not run, and its latency is not counted for the turn; its
    # caller's first token came all the same.
    assert reply.timings.llm_ms == 0 and reply.timings.ttft_ms > 0 and reply.timings.search_ms > 0
    assert event.timings.llm_ms == 0 and event.timings.ttft_ms > 0


class _Scraper(scraper_pb2_grpc.ScraperServiceServicer):
    """Fetch answers one page, or (page=None) UNIMPLEMENTED like a scraper without Fetch."""

    def __init__(self) -> None:
        self.page: scraper_pb2.FetchResponse | None = None
        self.urls: list[str] = []

    async def Fetch(self, request, context):
        self.urls.append(request.url)
        if self.page is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Fetch is not available")
        return self.page


@contextlib.asynccontextmanager
async def fake_scraper():
    scraper = _Scraper()
    server = grpc.aio.server()
    scraper_pb2_grpc.add_ScraperServiceServicer_to_server(scraper, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with channel(f"127.0.0.1:{port}") as ch:
            yield scraper, WebPages(scraper_pb2_grpc.ScraperServiceStub(ch))
    finally:
        await server.stop(0)


async def test_web_strategy_answers_from_the_fetched_page_or_says_it_does_not_know(served, llm, search, admin):
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(name="Rocket shop", id=f"t-{RUN_ID}-web", website="https://rockets.example/"),
        metadata=admin, timeout=10)
    key = Key(reply.key.id, reply.product_key)
    for _ in range(150):  # search offers WEB once its health probe has seen the scraper serving
        plan = await search.Plan(search_pb2.PlanRequest(product_key=key.secret, message="Do you deliver to Mars?"),
                                 timeout=10)
        if plan.strategy == common_pb2.STRATEGY_WEB:
            break
        await asyncio.sleep(0.1)
    assert plan.strategy == common_pb2.STRATEGY_WEB and plan.fetch_url == "https://rockets.example/"
    async with fake_scraper() as (scraper, web), served(web=web) as s:
        scraper.page = scraper_pb2.FetchResponse(
            url="https://rockets.example/", title="Rocket shop",
            text="We deliver to Mars every Tuesday by rocket.\n\nDelivery to the Moon is free.")
        answered = await s.stub.Chat(ask(key, "Do you deliver to Mars?", no_cache=True), timeout=10)
        scraper.page = None
        unanswered = await s.stub.Chat(ask(key, "Do you deliver to Mars?", no_cache=True), timeout=10)
    assert scraper.urls == ["https://rockets.example/"] * 2
    assert answered.strategy == common_pb2.STRATEGY_WEB
    assert [x.id for x in answered.sources] == ["web-1"] and answered.sources[0].url == "https://rockets.example/"
    assert unanswered.strategy == common_pb2.STRATEGY_NO_ANSWER and not unanswered.sources
    assert llm.count() == 1  # nothing to answer from: no LLM call


async def test_feedback_belongs_to_the_turns_key(served, shop, key_b, events):
    async with served() as s:
        reply = await s.stub.Chat(ask(shop, "How much does the Plus plan cost?"), timeout=10)
        ok = await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=shop.secret, request_id=reply.request_id, rating=-1, comment="too vague"), timeout=10)
        feedback = await events.feedback_for(reply.request_id)
        assert feedback.event_id == ok.event_id and feedback.rating == -1 and feedback.comment == "too vague"
        assert feedback.product_key_id == shop.id and feedback.message == "How much does the Plus plan cost?"
        for key, request_id, rating, code in [
            (key_b, reply.request_id, 1, grpc.StatusCode.NOT_FOUND),        # another key's turn
            (shop, "0" * 32, 1, grpc.StatusCode.NOT_FOUND),                 # no such turn
            (shop, reply.request_id, 0, grpc.StatusCode.INVALID_ARGUMENT),  # not +1 / -1
            (shop, "  ", 1, grpc.StatusCode.INVALID_ARGUMENT),              # no request id at all
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.SubmitFeedback(response_pb2.FeedbackRequest(
                    product_key=key.secret, request_id=request_id, rating=rating), timeout=10)
            assert rpc_error(info).code() == code


async def test_search_rate_limit_passes_through_with_both_retry_hints(served, search, admin):
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(name="Tiny", id=f"t-{RUN_ID}-tiny",
                                           settings=search_pb2.KeySettings(rate_limit_per_second=0.2, rate_limit_burst=1)),
        metadata=admin, timeout=10)
    key = Key(reply.key.id, reply.product_key)
    async with served() as s:
        await s.stub.Chat(ask(key, "hello", no_cache=True), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(key, "hello", no_cache=True), timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.details()
    trailers = dict(err.trailing_metadata())
    ms, seconds = int(trailers["retry-after-ms"]), int(trailers["retry-after"])   # both conventions
    assert ms > 0 and seconds >= 1 and seconds * 1000 >= ms


async def test_a_knowledge_update_invalidates_cached_answers(response, search, admin):
    """Through the response service process: its KnowledgeUpdated follower drops the key's pointer."""
    key = await make_key(search, admin, f"inv-{uuid.uuid4().hex[:6]}", faq=[],
                         docs=[("Hours", "The workshop opens at 9am on weekdays.")])
    question = ask(key, "When does the workshop open on weekdays?", session_id="inv")
    first = await response.Chat(question, timeout=10)
    second = await response.Chat(question, timeout=10)
    assert "9am" in first.answer and first.cache_status == common_pb2.CACHE_STATUS_MISS
    assert second.cache_status == common_pb2.CACHE_STATUS_HIT
    await search.DeleteKnowledge(search_pb2.DeleteKnowledgeRequest(product_key_id=key.id, document="Hours"),
                                 metadata=admin, timeout=10)
    await search.AddDocument(search_pb2.AddDocumentRequest(
        product_key_id=key.id, title="Hours", text="The workshop opens at 8am on weekdays."), metadata=admin, timeout=10)
    for _ in range(100):
        reply = await response.Chat(question, timeout=10)
        if reply.cache_status != common_pb2.CACHE_STATUS_HIT:
            break
        await asyncio.sleep(0.1)
    assert reply.cache_status == common_pb2.CACHE_STATUS_MISS and "8am" in reply.answer
