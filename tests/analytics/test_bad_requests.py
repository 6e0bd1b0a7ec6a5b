"""A request the analytics service refuses for what it asks is INVALID_ARGUMENT before any PostgreSQL
connection is taken: while none is to be had, a bad request is not a retryable UNAVAILABLE."""

from __future__ import annotations

import asyncio

import pytest

from services.analytics.live import StreamSlots
from services.analytics.server import AnalyticsDeps, AnalyticsServicer
from services.common.admin import ADMIN_HEADER
from services.common.errors import InvalidArgument
from services.common.pb.parley.v1 import analytics_pb2

TOKEN = "analytics-admin-token"


class _Context:
    def invocation_metadata(self):
        return ((ADMIN_HEADER, TOKEN),)


class _NoConnections:
    """A pool whose connections are all taken: acquiring one waits until it times out."""

    def get_max_size(self) -> int:
        return 4

    async def acquire(self, timeout: float | None = None):
        await asyncio.sleep(timeout or 0)
        raise TimeoutError


def _servicer() -> AnalyticsServicer:
    return AnalyticsServicer(AnalyticsDeps(pool=_NoConnections()), TOKEN, streams=StreamSlots(2, 10),
                             queries=StreamSlots(4, 200, what="analytics queries"), pool_wait_seconds=0.2)


@pytest.mark.parametrize("limit", [-1, 1001])
async def test_a_bad_question_limit_is_invalid_argument_with_no_connection_to_be_had(limit):
    request = analytics_pb2.TopQuestionsRequest(product_key_id="k", limit=limit)
    for call in (_servicer().TopQuestions, _servicer().KnowledgeGaps):
        with pytest.raises(InvalidArgument, match="limit"):
            await call(request, _Context())


async def test_a_week_and_more_per_minute_is_invalid_argument_with_no_connection_to_be_had():
    request = analytics_pb2.GetMetricsRequest(product_key_id="k", granularity=analytics_pb2.GRANULARITY_MINUTE)
    request.start.FromSeconds(1_700_000_000)
    request.end.FromSeconds(1_700_000_000 + 8 * 86400)
    with pytest.raises(InvalidArgument, match="per minute"):
        await _servicer().GetMetrics(request, _Context())


@pytest.mark.parametrize("ask", ["start after end", "no such granularity", "nanos past a second"])
async def test_a_malformed_metrics_request_is_invalid_argument_while_every_query_slot_is_taken(ask):
    """GetMetrics took its query slot before it read the request: while the slots were taken, a request
    no retry can mend was RESOURCE_EXHAUSTED, with a hint to retry it."""
    servicer = AnalyticsServicer(AnalyticsDeps(pool=_NoConnections()), TOKEN, streams=StreamSlots(2, 10),
                                 queries=StreamSlots(4, 1, what="analytics queries"), pool_wait_seconds=0.2)
    request = analytics_pb2.GetMetricsRequest(product_key_id="k")
    if ask == "start after end":
        request.start.FromSeconds(1_700_000_000)
        request.end.FromSeconds(1_600_000_000)
    elif ask == "no such granularity":
        request.granularity = 7
    else:
        request.start.seconds, request.start.nanos = 1_700_000_000, 1_000_000_000
    with servicer._queries.held(None):      # the process's one query slot, taken
        with pytest.raises(InvalidArgument):
            await servicer.GetMetrics(request, _Context())
