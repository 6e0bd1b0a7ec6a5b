"""What the analytics calls answer to requests they cannot serve as asked (INVALID_ARGUMENT naming what
is wrong, never INTERNAL or a silent default), and buckets cut in UTC whatever the database's time zone."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.analytics import queries
from services.common.pb.parley.v1 import analytics_pb2
from tests.conftest import rpc_error

YEAR_1 = -62_135_596_800   # 0001-01-01T00:00:00Z, the earliest Timestamp


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


async def _refused(call, request, admin) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, metadata=admin, timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.INVALID_ARGUMENT, rpc_error(info).details()
    return rpc_error(info).details()


async def test_an_enum_number_the_proto_does_not_define_is_invalid_argument_naming_the_field(analytics, admin, key_a):
    for fields, named in [({"granularity": 99}, "granularity 99"), ({"granularity": -1}, "granularity -1"),
                          ({"group_by": 7}, "group_by 7")]:
        details = await _refused(analytics.GetMetrics, analytics_pb2.GetMetricsRequest(product_key_id=key_a.id, **fields),
                                 admin)
        assert named in details and ("GRANULARITY_HOUR" in details or "GROUP_BY_MODEL" in details), details
    reply = await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(
        product_key_id=key_a.id, granularity=analytics_pb2.GRANULARITY_DAY, group_by=analytics_pb2.GROUP_BY_MODEL),
        metadata=admin, timeout=10)
    assert reply.total.turns >= 0


async def test_ranges_and_limits_out_of_bounds_are_invalid_argument(analytics, admin, key_a):
    def metrics(**fields):
        return analytics_pb2.GetMetricsRequest(product_key_id=key_a.id, **fields)

    for request, named in [
        (metrics(start=_ts(2_000_000_000), end=_ts(1_900_000_000)), "start must be before end"),
        (metrics(start=_ts(0), end=_ts(2_000_000_000)), "longer than 400 days"),
        (metrics(start=_ts(10**15)), "start is not a valid timestamp"),
        (metrics(end=_ts(0, 1_000_000_000)), "end is not a valid timestamp"),
        # The default start, an hour before an end in the first hour of year 1, is no datetime at all.
        (metrics(end=_ts(YEAR_1 + 1800)), "give start"),
        # Per minute, 30 days would be 43,200 points: more than a reply holds.
        (metrics(start=_ts(1_700_000_000), end=_ts(1_700_000_000 + 30 * 86400),
                 granularity=analytics_pb2.GRANULARITY_MINUTE), "per minute is at most 7 days"),
    ]:
        assert named in await _refused(analytics.GetMetrics, request, admin)
    for rpc in (analytics.TopQuestions, analytics.KnowledgeGaps):
        for limit in (-1, 1001, 2**31 - 1):
            details = await _refused(rpc, analytics_pb2.TopQuestionsRequest(product_key_id=key_a.id, limit=limit), admin)
            assert f"not {limit}" in details and "limit" in details
        assert "give start" in await _refused(
            rpc, analytics_pb2.TopQuestionsRequest(product_key_id=key_a.id, end=_ts(YEAR_1 + 10)), admin)
        for limit in (0, 1, 1000):
            await rpc(analytics_pb2.TopQuestionsRequest(product_key_id=key_a.id, limit=limit), metadata=admin, timeout=10)
    # The edges a Timestamp holds are served; seven days per minute too.
    await analytics.GetMetrics(metrics(start=_ts(YEAR_1), end=_ts(YEAR_1 + 86400), granularity=analytics_pb2.GRANULARITY_DAY),
                               metadata=admin, timeout=10)
    await analytics.GetMetrics(metrics(start=_ts(1_700_000_000), end=_ts(1_700_000_000 + 7 * 86400),
                                       granularity=analytics_pb2.GRANULARITY_MINUTE), metadata=admin, timeout=10)


async def test_a_reply_with_more_points_than_grpc_sends_is_invalid_argument_not_resource_exhausted(
        analytics, admin, key_a, pg):
    """Seven days per minute grouped by strategy, two strategies every minute: 20,160 points, about
    3.5 MiB with their histograms; refused by name before the reply hits gRPC's 4 MiB limit
    (which would fail the call RESOURCE_EXHAUSTED, read by clients as a rate limit). Ungrouped, the
    same range is served."""
    # Within metrics_minute's retention (400 days): the stream workers' retention runs, started by other
    # tests, deleted rows of 2001 while this one read them (5,160 of 10,080 points were left).
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=100)
    await pg.execute(
        "INSERT INTO metrics_minute (product_key_id, minute, strategy, model, turns) "
        "SELECT $1, m, s, 'extractive', 1 "
        "FROM generate_series($2::timestamptz, $2::timestamptz + interval '7 days' - interval '1 minute', "
        "interval '1 minute') AS m, unnest(ARRAY['KNOWLEDGE', 'FAQ']) AS s", key_a.id, start)
    try:
        request = analytics_pb2.GetMetricsRequest(
            product_key_id=key_a.id, start=_ts(int(start.timestamp())), end=_ts(int(start.timestamp()) + 7 * 86400),
            granularity=analytics_pb2.GRANULARITY_MINUTE, group_by=analytics_pb2.GROUP_BY_STRATEGY)
        details = await _refused(analytics.GetMetrics, request, admin)
        assert "more than 12,000 points" in details, details
        request.group_by = analytics_pb2.GROUP_BY_NONE
        reply = await analytics.GetMetrics(request, metadata=admin, timeout=30)
        assert len(reply.points) == 7 * 1440 and reply.total.turns == 2 * 7 * 1440
    finally:
        await pg.execute("DELETE FROM metrics_minute WHERE product_key_id = $1 AND minute >= $2 AND minute < $3",
                         key_a.id, start, start + timedelta(days=7))


async def test_hour_and_day_buckets_are_utc_whatever_the_session_time_zone(stack, pg):
    key_id = f"tz-{uuid.uuid4().hex[:8]}"
    minutes = [_utc(2026, 1, 1, 18, 20), _utc(2026, 1, 1, 18, 45), _utc(2026, 1, 1, 23, 50), _utc(2026, 1, 2, 0, 10)]
    await pg.executemany("INSERT INTO metrics_minute (product_key_id, minute, strategy, model, turns) "
                         "VALUES ($1, $2, 'KNOWLEDGE', 'extractive', 1)", [(key_id, m) for m in minutes])
    # A half-hour offset: an hour cut in it starts at :30 UTC, a day at 18:30 UTC the day before.
    kolkata = await asyncpg.create_pool(stack.postgres_dsn, min_size=1, max_size=1,
                                        server_settings={"timezone": "Asia/Kolkata"})
    try:
        assert await kolkata.fetchval("SHOW TimeZone") == "Asia/Kolkata"
        start, end = _utc(2026, 1, 1, 12, 0), _utc(2026, 1, 2, 12, 0)
        hours = await queries.get_metrics(kolkata, key_id, start, end, "hour")
        assert [(r.bucket_start, r.counts["turns"]) for r in hours] == [
            (_utc(2026, 1, 1, 18), 2), (_utc(2026, 1, 1, 23), 1), (_utc(2026, 1, 2, 0), 1)]
        days = await queries.get_metrics(kolkata, key_id, start - timedelta(days=1), end, "day")
        assert [(r.bucket_start, r.counts["turns"]) for r in days] == [(_utc(2026, 1, 1), 3), (_utc(2026, 1, 2), 1)]
        # A minute belongs to the range that holds its start: ranges that follow each other, cut inside
        # minutes, count each minute once.
        cuts = [start, _utc(2026, 1, 1, 18, 20, 30), _utc(2026, 1, 1, 18, 45, 30), _utc(2026, 1, 1, 23, 50, 0),
                _utc(2026, 1, 2, 0, 10, 59), end]
        counted = [queries.merge_rows(await queries.get_metrics(kolkata, key_id, a, b), a).counts["turns"]
                   for a, b in zip(cuts, cuts[1:])]
        assert counted == [1, 1, 0, 2, 0]
    finally:
        await kolkata.close()
