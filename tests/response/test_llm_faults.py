"""Groq failing in the ways the plain local server does not play: a caller's own short deadline, empty,
filtered and cut answers, a refused API key, a missing model, a stalled stream, a rate limit with a
date, an error text that must stay ours. The real `groq` client against a local Groq-compatible
server that can also answer so."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import grpc
import pytest
from aiohttp import web

from bench.fake_llm import FakeLLM, Seen
from services.common.pb.parley.v1 import common_pb2, response_pb2
from tests.conftest import rpc_error
from tests.response.conftest import LARGE, SMALL, ask

PLAIN = "How much does the Plus plan cost?"
SEVERAL = "How much is the Plus plan? Does the Plus plan include support?"   # the large model, then the small
ORG_TEXT = "Rate limit reached for model in organization org_01hsecret on tokens per minute: Limit 6000, Used 5999"


@dataclass
class Odd:
    """An answer the plain server does not give.

    kind: "empty" (no content, then [DONE]) | "no-choices" (chunks with `choices: []`, then [DONE]) |
    "finish" (the usual answer ending with `finish_reason`) | "status" (HTTP `status`, `headers`, `error`).
    """

    kind: str
    finish: str = "stop"
    status: int = 0
    headers: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    model: str | None = None       # only for requests to this model (None: any)
    linger: float = 0.0            # seconds the body stays open after [DONE]


class OddLLM(FakeLLM):
    """The local Groq-compatible server, with `odd` answers taken first (queued or as the default)."""

    def __init__(self) -> None:
        super().__init__()
        self.odd: deque[Odd] = deque()
        self.odd_default: Odd | None = None

    def reset(self, default=None) -> None:
        super().reset(default)
        self.odd.clear()
        self.odd_default = None

    def _pick_odd(self, model: str) -> Odd | None:
        for i, o in enumerate(self.odd):
            if o.model is None or o.model == model:
                del self.odd[i]
                return o
        if self.odd_default is not None and self.odd_default.model in (None, model):
            return self.odd_default
        return None

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        model = payload.get("model", "")
        odd = self._pick_odd(model)
        if odd is None:
            return await super()._completions(request)
        seen = Seen(time.monotonic(), model, payload.get("messages", []), bool(payload.get("stream")),
                    outcome=odd.kind if odd.kind != "status" else str(odd.status))
        self.requests.append(seen)
        if odd.kind == "status":
            return web.json_response({"error": odd.error}, status=odd.status, headers=odd.headers)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        cid, usage = f"chatcmpl-{uuid.uuid4().hex[:12]}", {"prompt_tokens": 10, "completion_tokens": 0}

        async def send(choices: list, last: bool = False) -> None:
            body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": choices}
            if last:
                body["x_groq"] = {"id": cid, "usage": usage}
            await resp.write(f"data: {json.dumps(body)}\n\n".encode())

        if odd.kind == "empty":
            await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            await send([{"index": 0, "delta": {}, "finish_reason": "stop"}], last=True)
        elif odd.kind == "no-choices":
            await send([])
            await send([], last=True)
        else:
            pieces = self._answer_pieces(model, seen.messages)
            usage["completion_tokens"] = len(pieces)
            for piece in pieces:
                await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            await send([{"index": 0, "delta": {}, "finish_reason": odd.finish}], last=True)
        await resp.write(b"data: [DONE]\n\n")
        if odd.linger:
            await asyncio.sleep(odd.linger)
        await resp.write_eof()
        seen.finished = time.monotonic()
        return resp


@pytest.fixture(scope="module")
async def odd_llm():
    async with OddLLM() as server:
        yield server


@pytest.fixture
async def llm(odd_llm) -> OddLLM:
    """This module's server in place of the shared one (the `served` engines call it)."""
    return odd_llm.well_behaved()


async def _stream(stub, request, timeout: float) -> list[response_pb2.ChatStreamResponse]:
    return [c async for c in stub.ChatStream(request, timeout=timeout)]


# --- the caller's deadline is not the model's failure -----------------------------------------------

async def test_callers_short_deadlines_do_not_open_the_breakers(served, llm, shop):
    """Five streams whose own deadline passes while the model thinks: the model did not fail them.
    Other tenants' turns still reach it afterwards."""
    llm.first_token_delay = 2.0
    async with served() as s:
        for i in range(5):
            try:
                await _stream(s.stub, ask(shop, SEVERAL, session_id=f"short{i}"), timeout=0.3)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.2)  # the detached answers end
        assert s.engine.llm.breaker(LARGE).state == "closed" and s.engine.llm.breaker(SMALL).state == "closed"
        llm.first_token_delay = 0.0
        reply = await s.stub.Chat(ask(shop, SEVERAL), timeout=10)
    assert reply.model == LARGE, reply


# --- answers that are no answers ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["empty", "no-choices", "content_filter"])
async def test_an_empty_or_filtered_answer_is_not_served_as_one_nor_cached(served, llm, shop, kind):
    llm.odd_default = Odd("finish", finish="content_filter") if kind == "content_filter" else Odd(kind)
    async with served() as s:
        chunks = await _stream(s.stub, ask(shop, PLAIN), timeout=10)
        first = chunks[-1].final
        llm.odd_default = None
        again = await s.stub.Chat(ask(shop, PLAIN), timeout=10)
    assert first.model == "extractive" and "49 euros" in first.answer, first
    assert again.cache_status == common_pb2.CACHE_STATUS_MISS and again.model == SMALL, again


async def test_an_answer_cut_at_max_tokens_is_served_but_not_cached(served, llm, shop):
    llm.odd_default = Odd("finish", finish="length")
    async with served() as s:
        chunks = await _stream(s.stub, ask(shop, PLAIN), timeout=10)
        first = chunks[-1].final
        again = await s.stub.Chat(ask(shop, PLAIN), timeout=10)
    assert first.model == SMALL and first.answer.startswith(f"Answer from {SMALL}")
    assert again.cache_status == common_pb2.CACHE_STATUS_MISS, again
    assert llm.count() == 2


async def test_a_complete_answer_whose_body_stays_open_after_done_is_kept(served, llm, shop):
    """[DONE] came: the answer is complete, whatever the rest of the body does (it is closed)."""
    llm.odd_default = Odd("finish", linger=3.0)
    async with served(llm_idle_timeout_seconds=0.3) as s:
        chunks = await _stream(s.stub, ask(shop, PLAIN, no_cache=True), timeout=20)
        assert s.engine.llm.breaker(SMALL).state == "closed" and s.engine.llm.breaker(SMALL)._failures == 0
    assert not any(c.restart for c in chunks)
    assert chunks[-1].final.model == SMALL and chunks[-1].final.answer.startswith(f"Answer from {SMALL}")


# --- the API key refused, a model gone --------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_api_key_opens_every_breaker_and_answers_go_on(served, llm, shop, status, caplog):
    llm.odd_default = Odd("status", status=status, error={
        "message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"})
    async with served(llm_breaker_reset_seconds=1.0) as s:
        with caplog.at_level(logging.WARNING, logger="services.response"):
            replies = [await s.stub.Chat(ask(shop, SEVERAL, no_cache=True), timeout=10) for _ in range(3)]
        assert [r.model for r in replies] == ["extractive"] * 3
        assert llm.count() == 1, [(r.model, r.outcome) for r in llm.requests]  # one call tells: the key is bad
        llm_ = s.engine.llm
        assert llm_.breaker(LARGE).state == "open" and llm_.breaker(SMALL).state == "open"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "API key" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in caplog.records]
        with pytest.raises(Exception, match="API key"):
            await llm_.check_key()                     # the health detail dependency/llm-key
        # The key is fixed: after the reset one trial call gets through and answering resumes.
        llm.odd_default = None
        await asyncio.sleep(1.1)
        healed = await s.stub.Chat(ask(shop, SEVERAL, no_cache=True), timeout=10)
        assert healed.model == LARGE
        await llm_.check_key()


async def test_a_missing_model_counts_as_that_models_failure(served, llm, shop):
    llm.odd_default = Odd("status", status=404, model=LARGE, error={
        "message": f"The model `{LARGE}` does not exist", "type": "invalid_request_error",
        "code": "model_not_found"})
    async with served(llm_breaker_failures=2, llm_breaker_reset_seconds=60) as s:
        replies = [await s.stub.Chat(ask(shop, SEVERAL, no_cache=True), timeout=10) for _ in range(3)]
        assert s.engine.llm.breaker(LARGE).state == "open" and s.engine.llm.breaker(SMALL).state == "closed"
    assert [r.model for r in replies] == [SMALL] * 3
    assert [r.model for r in llm.requests] == [LARGE, SMALL, LARGE, SMALL, SMALL]


# --- a shared call has its own time --------------------------------------------------------------

async def test_a_caller_joining_a_short_callers_flight_gets_the_llms_answer(served, llm, shop):
    llm.first_token_delay = 1.0
    async with served() as s:
        async def short():
            try:
                return await s.stub.Chat(ask(shop, PLAIN, session_id="short"), timeout=0.4)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        first = asyncio.ensure_future(short())
        await asyncio.sleep(0.15)
        patient = await s.stub.Chat(ask(shop, PLAIN, session_id="patient"), timeout=10)
        await first
    assert patient.model == SMALL and patient.cache_status in (common_pb2.CACHE_STATUS_SHARED,
                                                               common_pb2.CACHE_STATUS_MISS), patient
    assert llm.count() == 1


# --- a stream that stalls ------------------------------------------------------------------------

async def test_a_model_that_sends_no_first_token_is_left_early(served, llm, shop):
    llm.first_token_delay = 5.0
    async with served(llm_first_token_timeout_seconds=0.3, llm_breaker_failures=1) as s:
        start = time.monotonic()
        reply = await s.stub.Chat(ask(shop, SEVERAL, no_cache=True), timeout=20)
        elapsed = time.monotonic() - start
        assert s.engine.llm.breaker(LARGE).state == "open"   # the stall is the model's failure
    assert reply.model == "extractive" and elapsed < 2.5, elapsed
    assert [r.model for r in llm.requests] == [LARGE, SMALL]  # a stall is not retried on the same model


async def test_a_stream_that_stops_midway_restarts_with_the_fallback_early(served, llm, shop):
    llm.token_delay = 5.0
    async with served(llm_idle_timeout_seconds=0.3) as s:
        start = time.monotonic()
        chunks = await _stream(s.stub, ask(shop, PLAIN, no_cache=True), timeout=20)
        elapsed = time.monotonic() - start
    restarts = [i for i, c in enumerate(chunks) if c.restart]
    assert len(restarts) == 1 and restarts[0] > 0
    assert chunks[-1].final.model == "extractive" and elapsed < 2.5, elapsed


# --- what the caller is told -------------------------------------------------------------------

async def test_groqs_rate_limit_is_unavailable_with_its_retry_after_date(served, llm, shop):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    llm.odd_default = Odd("status", status=429, headers={"retry-after": when}, error={
        "message": ORG_TEXT, "type": "tokens", "code": "rate_limit_exceeded"})
    async with served(llm_fallback_extractive=False, llm_max_attempts=1) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.stub.Chat(ask(shop, PLAIN), timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err  # not the tenant's own rate limit
    assert 28 <= int(dict(err.trailing_metadata())["retry-after"]) <= 31
    assert "org_" not in err.details() and "6000" not in err.details()


@pytest.mark.parametrize("status", [400, 401, 404, 500])
async def test_groqs_error_text_stays_in_the_log(served, llm, shop, status, caplog):
    llm.odd_default = Odd("status", status=status, error={"message": ORG_TEXT, "type": "invalid_request_error"})
    async with served(llm_fallback_extractive=False, llm_max_attempts=1) as s:
        with caplog.at_level(logging.WARNING, logger="services.response"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.stub.Chat(ask(shop, PLAIN), timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "LLM" in err.details()
    assert "org_" not in err.details() and "6000" not in err.details(), err.details()
    if status != 500:   # a 5xx body is not read at all
        assert any("org_01hsecret" in r.getMessage() for r in caplog.records)
