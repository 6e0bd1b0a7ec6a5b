"""Per-key token buckets: atomic in Redis, RESOURCE_EXHAUSTED with a retry-after over the limit."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from services.common.pb.parley.v1 import search_pb2
from services.search.rate_limit import RateLimiter
from tests.conftest import RUN_ID, rpc_error


async def test_concurrent_takes_never_exceed_the_bucket(redis_client):
    limiter = RateLimiter(redis_client)
    key = f"test-{uuid.uuid4().hex}"
    verdicts = await asyncio.gather(*(limiter.take(key, 0.001, 10) for _ in range(60)))
    assert sum(v.allowed for v in verdicts) == 10
    refused = [v for v in verdicts if not v.allowed]
    assert all(v.retry_after_seconds > 0 for v in refused)


async def test_over_the_limit_is_resource_exhausted_with_retry_after(search, admin):
    reply = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(
            name="Limited", id=f"t-{RUN_ID}-srch-limited",
            settings=search_pb2.KeySettings(rate_limit_per_second=0.5, rate_limit_burst=3),
        ),
        metadata=admin, timeout=10,
    )
    request = search_pb2.PlanRequest(product_key=reply.product_key, message="hello")
    for _ in range(3):
        await search.Plan(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Plan(request, timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.details()
    trailers = dict(err.trailing_metadata() or ())
    assert 0 < int(trailers["retry-after-ms"]) <= 2000
