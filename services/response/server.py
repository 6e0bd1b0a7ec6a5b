"""ResponseService servicer: maps protobuf to the chat engine and back."""

from __future__ import annotations

import grpc

from services.common.errors import Unimplemented
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.response.answer import ChatEngine


class ResponseServicer(response_pb2_grpc.ResponseServiceServicer):
    def __init__(self, engine: ChatEngine) -> None:
        self._engine = engine

    async def Chat(self, request: response_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> response_pb2.ChatResponse:
        return await self._engine.chat(request, timeout=context.time_remaining())

    async def ChatStream(self, request: response_pb2.ChatRequest, context: grpc.aio.ServicerContext):
        async for item in self._engine.turn(request, timeout=context.time_remaining()):
            if isinstance(item, response_pb2.ChatResponse):
                yield response_pb2.ChatChunk(final=item)
            else:
                yield response_pb2.ChatChunk(delta=item)

    async def SubmitFeedback(self, request, context):
        raise Unimplemented("feedback is not available yet")
