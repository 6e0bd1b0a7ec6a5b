"""ResponseService servicer: maps protobuf to the chat engine and back."""

from __future__ import annotations

from contextlib import aclosing

import grpc

from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.response.answer import ChatEngine
from services.response.llm import Restart


class ResponseServicer(response_pb2_grpc.ResponseServiceServicer):
    def __init__(self, engine: ChatEngine) -> None:
        self._engine = engine

    async def Chat(self, request: response_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> response_pb2.ChatResponse:
        return await self._engine.chat(request, timeout=context.time_remaining())

    async def ChatStream(self, request: response_pb2.ChatRequest, context: grpc.aio.ServicerContext):
        # aclosing: a client that goes away closes the turn at once, which stops the LLM stream.
        async with aclosing(self._engine.turn(request, timeout=context.time_remaining())) as items:
            async for item in items:
                if isinstance(item, str):
                    yield response_pb2.ChatChunk(delta=item)
                elif isinstance(item, Restart):
                    yield response_pb2.ChatChunk(restart=True)
                else:
                    yield response_pb2.ChatChunk(final=item)

    async def SubmitFeedback(
        self, request: response_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> response_pb2.FeedbackResponse:
        event_id = await self._engine.feedback(request.product_key, request.request_id, request.rating, request.comment)
        return response_pb2.FeedbackResponse(event_id=event_id)
