"""Every AnalyticsService call is authenticated: a product key reads its own key's data only, the admin
token reads any key's; nobody else reads anything."""

from __future__ import annotations

import grpc
import pytest

from services.common.pb.parley.v1 import analytics_pb2
from tests.conftest import rpc_error


async def _call(analytics, rpc: str, request, metadata=()):
    if rpc == "StreamMetrics":
        stream = analytics.StreamMetrics(request, metadata=metadata, timeout=10)
        reply = await stream.read()
        stream.cancel()
        return reply
    return await getattr(analytics, rpc)(request, metadata=metadata, timeout=10)


def _request(rpc: str, **fields):
    if rpc == "GetMetrics":
        return analytics_pb2.GetMetricsRequest(**fields)
    if rpc == "StreamMetrics":
        return analytics_pb2.StreamMetricsRequest(interval_seconds=1, **fields)
    return analytics_pb2.TopQuestionsRequest(**fields)


RPCS = ["GetMetrics", "StreamMetrics", "TopQuestions", "KnowledgeGaps"]


@pytest.mark.parametrize("rpc", RPCS)
async def test_anonymous_and_wrong_credentials_are_refused(analytics, key_a, rpc):
    for fields, metadata, code in [
        ({"product_key_id": key_a.id}, (), grpc.StatusCode.UNAUTHENTICATED),
        ({}, (), grpc.StatusCode.UNAUTHENTICATED),
        ({"product_key_id": key_a.id, "product_key": "pk_guessed"}, (), grpc.StatusCode.UNAUTHENTICATED),
        ({"product_key_id": key_a.id}, (("x-parley-admin-token", "guess"),), grpc.StatusCode.UNAUTHENTICATED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _call(analytics, rpc, _request(rpc, **fields), metadata)
        assert rpc_error(info).code() == code, (fields, rpc_error(info).details())


@pytest.mark.parametrize("rpc", RPCS)
async def test_a_key_reads_its_own_data_only_and_the_admin_reads_any(analytics, key_a, key_b, admin, rpc):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(analytics, rpc, _request(rpc, product_key_id=key_b.id, product_key=key_a.secret))
    assert rpc_error(info).code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:   # the same answer whether the other key exists or not
        await _call(analytics, rpc, _request(rpc, product_key_id="no-such-key", product_key=key_a.secret))
    assert rpc_error(info).code() == grpc.StatusCode.PERMISSION_DENIED
    await _call(analytics, rpc, _request(rpc, product_key=key_a.secret))
    await _call(analytics, rpc, _request(rpc, product_key_id=key_a.id, product_key=key_a.secret))
    await _call(analytics, rpc, _request(rpc, product_key_id=key_b.id), admin)


async def test_a_live_stream_stops_when_its_key_is_revoked(analytics, search, admin):
    from services.common.pb.parley.v1 import search_pb2
    from tests.conftest import make_key

    key = await make_key(search, admin, "stream-revoke", faq=[], docs=[])
    stream = analytics.StreamMetrics(analytics_pb2.StreamMetricsRequest(product_key=key.secret, interval_seconds=1),
                                     timeout=20)
    assert (await stream.read()).total.turns == 0
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await stream.read()
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
