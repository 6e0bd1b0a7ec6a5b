"""The call to SearchService.Plan; its gRPC failures become domain errors that keep status and trailers."""

from __future__ import annotations

import logging

import grpc

from services.common.errors import RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, DeadlineExceeded, ParleyError
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc

logger = logging.getLogger(__name__)
_OPAQUE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}


class DownstreamError(ParleyError):
    """A status of the search service, passed on with its message and trailing metadata."""

    def __init__(self, code: str, message: str, trailers: dict[str, str]) -> None:
        super().__init__(message, trailers=trailers)
        self.code = code


class SearchClient:
    def __init__(self, stub: search_pb2_grpc.SearchServiceStub) -> None:
        self._stub = stub

    async def plan(self, product_key: str, message: str, session_id: str, timeout: float) -> search_pb2.PlanResponse:
        try:
            return await self._stub.Plan(
                search_pb2.PlanRequest(product_key=product_key, message=message, session_id=session_id),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded("the search service did not answer in time") from None
            trailers = {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
            if exc.code() in _OPAQUE:  # its details may name internal addresses: logged, not passed on
                logger.warning("search Plan failed: %s %s", exc.code().name, exc.details())
                trailers.setdefault(RETRY_AFTER_TRAILER, str(TRANSIENT_RETRY_AFTER_SECONDS))
                raise DownstreamError("UNAVAILABLE", "the search service is unavailable; retry shortly", trailers) from None
            raise DownstreamError(exc.code().name, exc.details() or exc.code().name, trailers) from None
