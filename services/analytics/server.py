"""AnalyticsService servicer: maps protobuf to the metrics queries and back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timezone

import asyncpg
import grpc

from services.analytics import queries
from services.common.errors import InvalidArgument
from services.common.pb.parley.v1 import analytics_pb2, analytics_pb2_grpc
from services.common.timestamps import to_timestamp


@dataclass
class AnalyticsDeps:
    pool: asyncpg.Pool | None = None



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


def _range(request) -> tuple:
    """The request's [start, end) with defaults (the last hour) and limits applied."""
    return queries.resolve_range(
        request.start.ToDatetime(tzinfo=timezone.utc) if request.HasField("start") else None,
        request.end.ToDatetime(tzinfo=timezone.utc) if request.HasField("end") else None,
    )


_GRANULARITY = {
    analytics_pb2.GRANULARITY_UNSPECIFIED: "",
    analytics_pb2.GRANULARITY_MINUTE: "minute",
    analytics_pb2.GRANULARITY_HOUR: "hour",
    analytics_pb2.GRANULARITY_DAY: "day",
}
_GROUP = {analytics_pb2.GROUP_BY_NONE: "", analytics_pb2.GROUP_BY_STRATEGY: "strategy", analytics_pb2.GROUP_BY_MODEL: "model"}


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, deps: AnalyticsDeps) -> None:
        self._deps = deps

    async def GetMetrics(self, request: analytics_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext):
        return await self._metrics(request)

    async def _metrics(self, request: analytics_pb2.GetMetricsRequest) -> analytics_pb2.GetMetricsResponse:
        start, end = _range(request)
        rows = await queries.get_metrics(
            self._deps.pool, request.product_key_id, start, end,
            _GRANULARITY.get(request.granularity, ""), _GROUP.get(request.group_by, ""),
        )
        return analytics_pb2.GetMetricsResponse(
            points=[_point(r) for r in rows], total=_point(queries.merge_rows(rows, start))
        )

    async def StreamMetrics(self, request: analytics_pb2.StreamMetricsRequest, context: grpc.aio.ServicerContext):
        """The last hour per minute, including the current minute, every interval until the client leaves."""
        if not request.product_key_id:
            raise InvalidArgument("product_key_id is required")
        interval = min(max(request.interval_seconds or 2, 1), 60)
        while True:
            yield await self._metrics(
                analytics_pb2.GetMetricsRequest(
                    product_key_id=request.product_key_id, granularity=analytics_pb2.GRANULARITY_MINUTE
                )
            )
            await asyncio.sleep(interval)

    async def _questions(self, request: analytics_pb2.TopQuestionsRequest, gaps_only: bool):
        start, end = _range(request)
        stats = await queries.top_questions(
            self._deps.pool, request.product_key_id, start, end, request.limit, gaps_only=gaps_only
        )
        return analytics_pb2.TopQuestionsResponse(
            questions=[
                analytics_pb2.QuestionCount(
                    question=q.question, count=q.count, no_answers=q.no_answers, feedback_down=q.feedback_down
                )
                for q in stats
            ]
        )

    async def TopQuestions(self, request, context):
        return await self._questions(request, gaps_only=False)

    async def KnowledgeGaps(self, request, context):
        return await self._questions(request, gaps_only=True)
