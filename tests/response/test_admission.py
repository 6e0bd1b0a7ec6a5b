"""Admission before the answer cache: a cached answer is still refused to a rotated-away secret (on
every replica, at once) and still charged to the key's rate limit."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from bench.harness import free_port
from services.common.grpc_server import channel, check_serving
from services.common.pb.parley.v1 import common_pb2, response_pb2, response_pb2_grpc, search_pb2
from services.common.product_keys import BUCKET_PREFIX
from services.launcher import Launcher
from services.search.planner import PLAN_BUCKET
from tests.conftest import RUN_ID, TestKey, rpc_error


def ask(secret: str, message: str) -> response_pb2.ChatRequest:
    return response_pb2.ChatRequest(product_key=secret, message=message)


async def _key(search, admin, suffix: str, rate: float, burst: int) -> TestKey:
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name=f"Test {suffix}", id=f"t-{RUN_ID}-{suffix}-{uuid.uuid4().hex[:4]}",
        settings=search_pb2.KeySettings(rate_limit_per_second=rate, rate_limit_burst=burst)), metadata=admin, timeout=10)
    key = TestKey(reply.key.id, reply.product_key)
    await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you ship abroad?",
                                                 answer="Yes, to the whole EU."), metadata=admin, timeout=10)
    return key


async def test_a_burst_of_cached_chats_is_rate_limited(response, search, admin):
    """Through the response service process: 60 concurrent cache hits on a key allowed 5/s, burst 5."""
    key = await _key(search, admin, "burst", rate=5, burst=5)
    first = await response.Chat(ask(key.secret, "Do you ship abroad?"), timeout=10)
    assert first.cache_status == common_pb2.CACHE_STATUS_MISS
    await asyncio.sleep(1.2)  # the bucket is full again

    async def one():
        try:
            return await response.Chat(ask(key.secret, "Do you ship abroad?"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(60)))
    answered = [r for r in results if isinstance(r, response_pb2.ChatResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.cache_status == common_pb2.CACHE_STATUS_HIT for r in answered)
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert 5 <= len(answered) <= 5 + 5 * 3  # the burst, plus what refills while the burst is served
    assert len(refused) >= 60 - 20
    assert all(int(dict(r.trailing_metadata())["retry-after-ms"]) > 0 for r in refused)


async def test_the_plans_of_chat_turns_are_not_charged_again(response, search, admin, redis_client):
    """The response service sends the platform's token with its Plans: a chat turn takes one token of
    the key's bucket, in admission, and none of the bucket search keeps for a tenant's own Plans."""
    key = await _key(search, admin, "plan-once", rate=0.01, burst=3)
    for n in range(3):
        reply = await response.Chat(ask(key.secret, f"Do you ship to island number {n}?"), timeout=10)
        assert reply.cache_status == common_pb2.CACHE_STATUS_MISS
    assert not await redis_client.exists(BUCKET_PREFIX + PLAN_BUCKET + key.id)
    assert await redis_client.exists(BUCKET_PREFIX + key.id)


async def test_a_rotated_secret_is_refused_at_once_on_every_replica_even_on_a_cache_hit(
    served, response, search, admin
):
    key = await _key(search, admin, "rot", rate=1000, burst=1000)
    question = ask(key.secret, "Do you ship abroad?")
    async with served() as a, served() as b:      # two more replicas, each with its own in-process cache
        await response.Chat(question, timeout=10)
        for replica in (response, a.stub, b.stub, response, a.stub, b.stub):
            reply = await replica.Chat(question, timeout=10)
        assert reply.cache_status == common_pb2.CACHE_STATUS_HIT
        rotated = await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin,
                                                timeout=10)
        for replica in (response, a.stub, b.stub):   # no wait: the very next call on each replica
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await replica.Chat(question, timeout=10)
            assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await replica.Chat(ask(rotated.product_key, "Do you ship abroad?"), timeout=10)
            assert reply.answer == "Yes, to the whole EU."
        await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
        for replica in (response, a.stub, b.stub):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await replica.Chat(ask(rotated.product_key, "Do you ship abroad?"), timeout=10)
            assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_turns_in_flight_are_counted_and_every_way_a_turn_ends_uncounts_it(served, search, admin):
    """Admission lingers only while other turns are under way: the count goes up with concurrent
    Chat and ChatStream turns and back to 0 after answers, refusals and cancelled calls."""
    key = await _key(search, admin, "inflight", rate=1000, burst=1000)
    async with served() as replica:
        engine = replica.engine
        seen: list[int] = []
        admit = engine.admission.admit

        async def watching(secret):
            seen.append(engine.in_flight)
            return await admit(secret)

        engine.admission.admit = watching
        await replica.stub.Chat(ask(key.secret, "Do you ship abroad?"), timeout=10)
        assert seen == [1] and engine.in_flight == 0
        seen.clear()

        async def streamed():
            return [chunk async for chunk in replica.stub.ChatStream(ask(key.secret, "Do you ship abroad?"),
                                                                     timeout=10)]

        await asyncio.gather(*(replica.stub.Chat(ask(key.secret, "Do you ship abroad?"), timeout=10)
                               for _ in range(6)), streamed(), streamed())
        assert max(seen) > 1 and engine.in_flight == 0
        with pytest.raises(grpc.aio.AioRpcError):
            await replica.stub.Chat(ask("pk_unknown_secret", "Do you ship abroad?"), timeout=10)
        call = replica.stub.Chat(ask(key.secret, "Something nobody asked before, answered slowly?"), timeout=10)
        await asyncio.sleep(0.01)
        call.cancel()
        for _ in range(100):
            if engine.in_flight == 0:
                break
            await asyncio.sleep(0.02)
        assert engine.in_flight == 0


async def test_two_response_processes_refuse_a_rotated_secret_at_once(response, search, admin, test_env, tmp_path):
    """A second response process beside the session's: both answered from their caches before the
    rotation, neither answers the old secret after it."""
    addr = f"127.0.0.1:{free_port()}"
    second = Launcher(tmp_path, env={**test_env, "PARLEY_RESPONSE_ADDR": addr,
                                     "PARLEY_RESPONSE_METRICS_PORT": str(free_port())})
    second.start(["response"])
    try:
        async with channel(addr) as ch:
            for _ in range(300):
                try:
                    await check_serving(ch, "response")
                    break
                except Exception:  # noqa: BLE001 - still starting
                    await asyncio.sleep(0.1)
            other = response_pb2_grpc.ResponseServiceStub(ch)
            key = await _key(search, admin, "rot2", rate=1000, burst=1000)
            question = ask(key.secret, "Do you ship abroad?")
            await response.Chat(question, timeout=10)
            for replica in (response, other):
                assert (await replica.Chat(question, timeout=10)).cache_status == common_pb2.CACHE_STATUS_HIT
            await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
            for replica in (response, other):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await replica.Chat(question, timeout=10)
                assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        second.stop(["response"])
