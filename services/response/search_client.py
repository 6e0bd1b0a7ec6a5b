"""The call to SearchService.Plan; its gRPC failures become domain errors that keep status and trailers."""

from __future__ import annotations

import logging

import grpc

from services.common.admin import admin_metadata
from services.common.errors import RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, DeadlineExceeded, ParleyError
from services.common.logs import EveryFewSeconds
from services.common.pb.parley.v1 import search_pb2, search_pb2_grpc

logger = logging.getLogger(__name__)
_OPAQUE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
_warnings = EveryFewSeconds()


class DownstreamError(ParleyError):
    """A status of the search service, passed on with its message and trailing metadata."""

    def __init__(self, code: str, message: str, trailers: dict[str, str]) -> None:
        super().__init__(message, trailers=trailers)
        self.code = code


class SearchClient:
    def __init__(self, stub: search_pb2_grpc.SearchServiceStub, admin_token: str = "") -> None:
        """`admin_token`: sent with each Plan, it tells search that the turn was charged to the key's
        rate limit here already (a tenant's own Plans take from a bucket of their own)."""
        self._stub = stub
        self._metadata = admin_metadata(admin_token) if admin_token else None

    async def plan(self, product_key: str, message: str, session_id: str, timeout: float, *,
                   callers: bool = True) -> search_pb2.PlanResponse:
        """`callers`: `timeout` is what is left of the caller's deadline (its end is DEADLINE_EXCEEDED);
        otherwise it is the service's own limit on a Plan, shorter than the caller's time, and a search
        that does not answer within it is UNAVAILABLE with a retry hint (another replica, or a moment
        later, may answer), not a deadline the caller did not set."""
        try:
            return await self._stub.Plan(
                search_pb2.PlanRequest(product_key=product_key, message=message, session_id=session_id),
                timeout=timeout, metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and callers:
                raise DeadlineExceeded("the search service did not answer in time") from None
            trailers = {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
            if exc.code() in _OPAQUE or exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # Its details may name internal addresses: logged (at most every few seconds: a
                # search that is away fails every turn), not passed on.
                if _warnings.due():
                    logger.warning("search Plan failed: %s %s%s", exc.code().name, exc.details(), _warnings.more())
                trailers.setdefault(RETRY_AFTER_TRAILER, str(TRANSIENT_RETRY_AFTER_SECONDS))
                raise DownstreamError("UNAVAILABLE", "the search service is unavailable; retry shortly", trailers) from None
            raise DownstreamError(exc.code().name, exc.details() or exc.code().name, trailers) from None
