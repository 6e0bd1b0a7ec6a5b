"""Redis that answers reads but refuses writes (out of memory under noeviction; a read-only replica):
cached answers are still served, and the service's health says writes are refused.

Reconfigures the shared Redis: run under the exclusive stack lock (`flock -x`)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import OutOfMemoryError

from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2

QUESTIONS = ("How much does the Plus plan cost?", "How long does international shipping take?",
             "Does the Free plan include support?")


@contextlib.asynccontextmanager
async def refusing_writes(client):
    """Redis out of memory: maxmemory under the memory in use, nothing evicted; restored after."""
    saved = await client.config_get("maxmemory*")
    used = (await client.info("memory"))["used_memory"]
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", max(1, used // 2))
        yield
    finally:
        await client.config_set("maxmemory", saved["maxmemory"])
        await client.config_set("maxmemory-policy", saved["maxmemory-policy"])


async def _writes_health(settings) -> int:
    async with channel(settings.response_addr) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="dependency/redis-writes"), timeout=2)
        except Exception:  # noqa: BLE001 - not reported (yet)
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return reply.status


async def _until_writes(settings, status: int) -> bool:
    for _ in range(100):   # the service probes its dependencies every 5 s
        if await _writes_health(settings) == status:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_cached_answers_are_served_while_redis_refuses_writes(served, shop, redis_client, llm, response, settings):
    async with served(answer_cache_local_seconds=0) as s:   # every hit is looked up in Redis
        for question in QUESTIONS:
            warm = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=question), timeout=10)
            assert warm.cache_status == common_pb2.CACHE_STATUS_MISS
        await s.engine.drain()   # the key's pointer is written
        answered = llm.count()
        async with refusing_writes(redis_client):
            statuses = []
            for question in QUESTIONS * 2:
                reply = await s.stub.Chat(response_pb2.ChatRequest(product_key=shop.secret, message=question),
                                          timeout=10)
                statuses.append(reply.cache_status)
                await s.engine.drain()   # its turn's record is refused before the next turn's lookup
            with pytest.raises(OutOfMemoryError):
                await redis_client.set("parley:test:refused", b"1", ex=10)
            writes_reported_down = await _until_writes(settings, health_pb2.HealthCheckResponse.NOT_SERVING)
        writes_reported_up = await _until_writes(settings, health_pb2.HealthCheckResponse.SERVING)
    assert statuses == [common_pb2.CACHE_STATUS_HIT] * 6
    assert llm.count() == answered
    assert writes_reported_down, "dependency/redis-writes was not reported NOT_SERVING"
    assert writes_reported_up, "dependency/redis-writes did not come back after Redis took writes again"
