"""AnalyticsService servicer: maps protobuf to the metrics queries and back."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import asyncpg
import grpc

from services.analytics import queries
from services.analytics.live import StreamSlots
from services.common.admin import ADMIN_HEADER, admin_token, check_admin
from services.common import db
from services.common.errors import (RETRY_AFTER_TRAILER, InvalidArgument,
                                    PermissionDenied, Unauthenticated, Unavailable)
from services.common.pb.parley.v1 import analytics_pb2, analytics_pb2_grpc
from services.common.product_keys import KeyValidator
from services.common.timestamps import from_timestamp, to_timestamp



@dataclass
class AnalyticsDeps:
    pool: asyncpg.Pool | None = None
    keys: KeyValidator | None = None


def authorize(token: str | None, expected: str, asked_id: str, own_id: str | None) -> str:
    """The key id a caller may read: the admin token reads any id (which it must name); a product key
    reads its own only. Another key's id is PERMISSION_DENIED without looking it up, so the answer says
    nothing about whether that key exists."""
    if token is not None:
        check_admin(token, expected)
        if not asked_id:
            raise InvalidArgument("product_key_id is required with the admin token")
        return asked_id
    if own_id is None:
        raise Unauthenticated(f"send the product key in product_key, or the admin token in the {ADMIN_HEADER} header")
    if asked_id and asked_id != own_id:
        raise PermissionDenied("a product key reads its own analytics only")
    return own_id


def _point(row: queries.MetricsRow) -> analytics_pb2.MetricsPoint:
    c = row.counts
    turns = c["turns"]

    def pct(hist: str) -> analytics_pb2.Percentiles:
        p50, p95, p99 = row.percentiles(hist)
        return analytics_pb2.Percentiles(p50=p50, p95=p95, p99=p99)

    return analytics_pb2.MetricsPoint(
        bucket_start=to_timestamp(row.bucket_start),
        group=row.group,
        turns=turns,
        cache_hits=c["cache_hits"],
        errors=c["errors"],
        no_answers=c["no_answers"],
        feedback_up=c["feedback_up"],
        feedback_down=c["feedback_down"],
        tokens_in=c["tokens_in"],
        tokens_out=c["tokens_out"],
        cache_hit_rate=c["cache_hits"] / turns if turns else 0.0,
        error_rate=c["errors"] / turns if turns else 0.0,
        total_ms=pct("total_hist"),
        ttft_ms=pct("ttft_hist"),
        search_ms=pct("search_hist"),
        llm_ms=pct("llm_hist"),
    )


def _when(request, name: str):
    """A Timestamp field as a datetime; one outside what a Timestamp may hold is INVALID_ARGUMENT."""
    if not request.HasField(name):
        return None
    try:
        return from_timestamp(getattr(request, name))
    except ValueError as exc:
        raise InvalidArgument(f"{name} is not a valid timestamp ({exc})") from None


def _range(request) -> tuple:
    """The request's [start, end) with defaults (the last hour) and limits applied."""
    return queries.resolve_range(_when(request, "start"), _when(request, "end"))


_GRANULARITY = {
    analytics_pb2.GRANULARITY_UNSPECIFIED: "",
    analytics_pb2.GRANULARITY_MINUTE: "minute",
    analytics_pb2.GRANULARITY_HOUR: "hour",
    analytics_pb2.GRANULARITY_DAY: "day",
}
_GROUP = {analytics_pb2.GROUP_BY_NONE: "", analytics_pb2.GROUP_BY_STRATEGY: "strategy", analytics_pb2.GROUP_BY_MODEL: "model"}


def _metrics_asked(request: analytics_pb2.GetMetricsRequest, key_id: str) -> tuple:
    """GetMetrics' window and choices, checked: (start, end, granularity, group_by)."""
    granularity, group_by = _choice(request, "granularity", _GRANULARITY), _choice(request, "group_by", _GROUP)
    start, end = _range(request)
    queries.check_metrics(key_id, start, end, granularity, group_by)
    return start, end, granularity, group_by


def _choice(request, name: str, choices: dict[int, str]) -> str:
    """An enum field as a query argument. Protobuf keeps a number its enum does not define (a newer or
    broken client): that is INVALID_ARGUMENT naming the field, not a silent default."""
    value = getattr(request, name)
    if value not in choices:
        enum = request.DESCRIPTOR.fields_by_name[name].enum_type
        known = ", ".join(f"{v.name} ({v.number})" for v in enum.values)
        raise InvalidArgument(f"{name} {value} is not a {enum.full_name}; one of {known}")
    return choices[value]


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, deps: AnalyticsDeps, admin_token: str, draining: asyncio.Event | None = None, *,
                 streams: StreamSlots, queries: StreamSlots, pool_wait_seconds: float) -> None:
        self._deps = deps
        self._admin_token = admin_token
        self._draining = draining or asyncio.Event()
        self._streams = streams
        self._queries = queries     # the unary queries in flight, per key and per process
        self._pool_wait = pool_wait_seconds

    async def _key_id(self, request, context: grpc.aio.ServicerContext) -> str:
        """The key whose data this call may read (see authorize)."""
        token = admin_token(context)
        own_id = None
        if token is None and request.product_key.strip():
            assert self._deps.keys is not None, "the gate admits calls only once the validator exists"
            own_id = (await self._deps.keys.validate(request.product_key)).id
        return authorize(token, self._admin_token, request.product_key_id, own_id)

    async def GetMetrics(self, request: analytics_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext):
        key_id = await self._key_id(request, context)
        asked = _metrics_asked(request, key_id)     # a malformed request is INVALID_ARGUMENT, before a slot
        with self._queries.held(None if admin_token(context) is not None else key_id):
            return await self._metrics(key_id, *asked)

    async def _metrics(self, key_id: str, start, end, granularity: str, group_by: str
                       ) -> analytics_pb2.GetMetricsResponse:
        async with db.connection(self._deps.pool, self._pool_wait) as conn:
            rows = await queries.get_metrics(conn, key_id, start, end, granularity, group_by)
        return analytics_pb2.GetMetricsResponse(
            points=[_point(r) for r in rows], total=_point(queries.merge_rows(rows, start))
        )

    async def StreamMetrics(self, request: analytics_pb2.StreamMetricsRequest, context: grpc.aio.ServicerContext):
        """The last hour per minute, including the current minute, every interval until the client leaves
        (or its key is revoked or rotated: the credentials are checked again before every update), or
        the service drains: then UNAVAILABLE with a retry-after, to reconnect to another instance.
        A key holds a few streams at most, and its streams share their updates (live.StreamSlots); the
        admin token is held to the process's bound only."""
        interval = min(max(request.interval_seconds or 2, 1), 60)
        key_id = await self._key_id(request, context)
        last_hour = analytics_pb2.GetMetricsRequest(product_key_id=key_id, granularity=analytics_pb2.GRANULARITY_MINUTE)
        with self._streams.held(None if admin_token(context) is not None else key_id):
            while True:
                yield await self._streams.update(key_id, lambda: self._metrics(key_id, *_metrics_asked(last_hour, key_id)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._draining.wait(), interval)
                if self._draining.is_set():
                    raise Unavailable("analytics is shutting down; reconnect to another instance",
                                      trailers={RETRY_AFTER_TRAILER: "1"})
                await self._key_id(request, context)

    async def _questions(self, request: analytics_pb2.TopQuestionsRequest, context, gaps_only: bool):
        key_id = await self._key_id(request, context)
        start, end = _range(request)
        queries.question_limit(key_id, request.limit)
        with self._queries.held(None if admin_token(context) is not None else key_id):
            async with db.connection(self._deps.pool, self._pool_wait) as conn:
                stats = await queries.top_questions(conn, key_id, start, end, request.limit, gaps_only=gaps_only)
        return analytics_pb2.TopQuestionsResponse(
            questions=[
                analytics_pb2.QuestionCount(
                    question=q.question, count=q.count, no_answers=q.no_answers, feedback_down=q.feedback_down
                )
                for q in stats
            ]
        )

    async def TopQuestions(self, request, context):
        return await self._questions(request, context, gaps_only=False)

    async def KnowledgeGaps(self, request, context):
        return await self._questions(request, context, gaps_only=True)
