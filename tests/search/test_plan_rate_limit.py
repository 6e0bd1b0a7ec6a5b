"""Plan called by a tenant with its own secret is limited per key (a bucket of Plan's own, at the key's
rate and burst); Plan called by the platform's own services (the admin token in metadata: the response
service, whose Chat admission has charged the turn already) is not charged."""

from __future__ import annotations

import grpc
import pytest

from services.common.admin import ADMIN_HEADER
from services.common.pb.parley.v1 import search_pb2
from services.common.product_keys import BUCKET_PREFIX
from tests.conftest import RUN_ID, rpc_error

QUESTION = "What is the refund policy?"


async def _limited_key(search, admin, suffix: str) -> search_pb2.CreateProductKeyResponse:
    return await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Limited", id=f"t-{RUN_ID}-plan-rl-{suffix}",
        settings=search_pb2.KeySettings(rate_limit_per_second=0.05, rate_limit_burst=2)), metadata=admin, timeout=10)


async def test_a_tenant_calling_plan_itself_is_limited_per_key(search, admin, redis_client):
    key = await _limited_key(search, admin, "tenant")
    request = search_pb2.PlanRequest(product_key=key.product_key, message=QUESTION)
    for _ in range(2):
        await search.Plan(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Plan(request, timeout=10)
    error = rpc_error(info)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and key.key.id in error.details()
    trailers = dict(error.trailing_metadata() or ())
    assert int(trailers["retry-after-ms"]) > 1000 and int(trailers["retry-after"]) >= 1
    # A wrong admin token identifies no platform service: the call is the tenant's, and limited.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.Plan(request, metadata=((ADMIN_HEADER, "guess"),), timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The bucket Chat's admission takes from is not Plan's: direct Plans do not spend the key's chat turns.
    assert not await redis_client.exists(BUCKET_PREFIX + key.key.id)


async def test_plan_from_the_platform_is_not_charged(search, admin):
    key = await _limited_key(search, admin, "platform")
    request = search_pb2.PlanRequest(product_key=key.product_key, message=QUESTION)
    for _ in range(5):
        reply = await search.Plan(request, metadata=admin, timeout=10)
        assert reply.product_key_id == key.key.id
    for _ in range(2):      # the tenant's own bucket is still full
        await search.Plan(request, timeout=10)
