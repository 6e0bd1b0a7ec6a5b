"""One chat turn: plan with the search service, answer, and publish the ChatTurn event."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from services.common.errors import DeadlineExceeded, InvalidArgument, Unauthenticated
from services.common.kafka import EventProducer, new_event_id, now_timestamp
from services.common.pb.parley.v1 import common_pb2, events_pb2, response_pb2, search_pb2, search_pb2_grpc
from services.common.settings import Settings
from services.response.llm import Answer, Answerer, AnswerRequest, PassageText

logger = logging.getLogger(__name__)


def validate_chat(request: response_pb2.ChatRequest, max_chars: int) -> None:
    if not request.product_key.strip():
        raise Unauthenticated("product key missing")
    if not request.message.strip():
        raise InvalidArgument("message is empty")
    if len(request.message) > max_chars:
        raise InvalidArgument(f"message has {len(request.message)} characters; the limit is {max_chars}")


@dataclass
class TurnClock:
    start: float
    search_ms: float = 0.0
    ttft_ms: float = 0.0
    llm_ms: float = 0.0

    def since(self, t: float) -> float:
        return (time.perf_counter() - t) * 1000.0


class ChatEngine:
    """Everything a chat turn does, shared by Chat and ChatStream."""

    def __init__(
        self, settings: Settings, search: search_pb2_grpc.SearchServiceStub, answerer: Answerer, producer: EventProducer
    ) -> None:
        self._settings = settings
        self._search = search
        self._answerer = answerer
        self._producer = producer

    async def _plan(self, request: response_pb2.ChatRequest, timeout: float | None) -> search_pb2.PlanResponse:
        budget = self._settings.search_timeout_seconds
        if timeout is not None:
            budget = max(0.05, min(budget, timeout))
        return await self._search.Plan(
            search_pb2.PlanRequest(
                product_key=request.product_key, message=request.message, session_id=request.session_id
            ),
            timeout=budget,
        )

    async def turn(
        self, request: response_pb2.ChatRequest, *, timeout: float | None = None
    ) -> AsyncIterator[str | response_pb2.ChatResponse]:
        """Yields answer pieces as they are produced, then the complete ChatResponse."""
        clock = TurnClock(time.perf_counter())
        validate_chat(request, self._settings.max_message_chars)
        request_id = uuid.uuid4().hex
        try:
            plan = await self._plan(request, timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded("the search service did not answer in time") from None
            raise
        clock.search_ms = clock.since(clock.start)
        strategy = common_pb2.Strategy.Name(plan.strategy).removeprefix("STRATEGY_")
        answer_request = AnswerRequest(
            message=request.message,
            key_name=plan.key_name,
            instructions=plan.instructions,
            strategy=strategy,
            passages=[PassageText(p.id, p.kind, p.title, p.text, p.score) for p in plan.passages],
        )
        llm_start = time.perf_counter()
        answer: Answer | None = None
        async for piece in self._answerer.stream(answer_request):
            if isinstance(piece, Answer):
                answer = piece
                break
            if not clock.ttft_ms:
                clock.ttft_ms = clock.since(llm_start)
            yield piece
        assert answer is not None
        clock.llm_ms = clock.since(llm_start)
        if not clock.ttft_ms:
            clock.ttft_ms = clock.llm_ms
        if not answer.cited and strategy == "KNOWLEDGE":
            strategy = "NO_ANSWER"  # the passages did not hold an answer after all
        by_id = {p.id: p for p in plan.passages}
        timings = common_pb2.Timings(
            search_ms=clock.search_ms, ttft_ms=clock.ttft_ms, llm_ms=clock.llm_ms, total_ms=clock.since(clock.start)
        )
        response = response_pb2.ChatResponse(
            request_id=request_id,
            answer=answer.text,
            sources=[by_id[i] for i in answer.cited if i in by_id],
            strategy=common_pb2.Strategy.Value("STRATEGY_" + strategy),
            model=answer.model,
            cache_status=common_pb2.CACHE_STATUS_MISS,
            timings=timings,
            usage=common_pb2.TokenUsage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens),
            reasons=plan.reasons,
        )
        await self._emit(plan.product_key_id, request, response)
        yield response

    async def _emit(self, key_id: str, request: response_pb2.ChatRequest, response: response_pb2.ChatResponse) -> None:
        event = events_pb2.ChatTurn(
            event_id=new_event_id(),
            occurred_at=now_timestamp(),
            product_key_id=key_id,
            session_id=request.session_id,
            request_id=response.request_id,
            message=request.message,
            answer=response.answer,
            strategy=response.strategy,
            model=response.model,
            cache_status=response.cache_status,
            timings=response.timings,
            usage=response.usage,
            cost_usd=0.0,
            source_ids=[s.id for s in response.sources],
        )
        await self._producer.publish(self._settings.topic("chat_turns"), key_id, event, trace_id=response.request_id)

    async def chat(self, request: response_pb2.ChatRequest, *, timeout: float | None = None) -> response_pb2.ChatResponse:
        async for item in self.turn(request, timeout=timeout):
            if isinstance(item, response_pb2.ChatResponse):
                return item
        raise AssertionError("a turn always ends with a ChatResponse")
