"""One chat turn end to end through response, search, Kafka, the Faust worker and analytics."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.grpc_server import channel
from services.common.pb.parley.v1 import analytics_pb2, common_pb2, response_pb2, search_pb2
from tests.conftest import rpc_error


async def chat(response, key, message, session="s1"):
    return await response.Chat(
        response_pb2.ChatRequest(product_key=key.secret, session_id=session, message=message), timeout=10
    )


async def test_answer_comes_from_the_keys_own_knowledge_only(response, key_a, key_b):
    reply_a = await chat(response, key_a, "What kind of bread do you bake?")
    assert "sourdough" in reply_a.answer.lower()
    assert "mechanics" not in reply_a.answer and "tyre" not in reply_a.answer
    assert reply_a.sources and all(s.id for s in reply_a.sources)
    assert reply_a.strategy == common_pb2.STRATEGY_KNOWLEDGE

    reply_b = await chat(response, key_b, "When are you open?")
    assert "bike shop" in reply_b.answer
    assert "bakery" not in reply_b.answer

    reply_a2 = await chat(response, key_a, "When are you open?")
    assert "bakery" in reply_a2.answer and "bike" not in reply_a2.answer
    ids_b = {s.id for s in reply_b.sources}
    assert ids_b.isdisjoint({s.id for s in reply_a2.sources})


async def test_question_outside_the_knowledge_gets_no_answer(response, key_a):
    reply = await chat(response, key_a, "Can you repair my flat tyre?")
    assert reply.strategy == common_pb2.STRATEGY_NO_ANSWER
    assert "twenty minutes" not in reply.answer
    assert not reply.sources


async def test_unknown_product_key_is_unauthenticated(response):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await response.Chat(response_pb2.ChatRequest(product_key="pk_not-a-real-key", message="hello"), timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown" in err.details() and "product key" in err.details()


async def test_missing_product_key_is_unauthenticated(response):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await response.Chat(response_pb2.ChatRequest(product_key="", message="hello"), timeout=10)
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("message", ["", "   \n\t ", "x" * 100_000])
async def test_empty_and_oversized_messages_are_invalid(response, key_a, message):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await response.Chat(response_pb2.ChatRequest(product_key=key_a.secret, message=message), timeout=10)
    err = rpc_error(info)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("empty" in err.details()) if len(message) < 100 else ("limit" in err.details())


async def test_chat_stream_sends_pieces_then_a_final_chunk(response, key_a):
    chunks = [
        c async for c in response.ChatStream(
            response_pb2.ChatRequest(product_key=key_a.secret, session_id="s2", message="Tell me about your sourdough bread"),
            timeout=10,
        )
    ]
    assert len(chunks) >= 2
    assert all(not c.HasField("final") for c in chunks[:-1])
    final = chunks[-1].final
    assert "".join(c.delta for c in chunks[:-1]) == final.answer
    assert final.sources and final.model == "extractive"
    assert final.timings.total_ms >= final.timings.search_ms > 0


async def test_each_turn_reaches_metrics_exactly_once(response, analytics, search, admin, pg):
    from tests.conftest import make_key

    key = await make_key(search, admin, "metrics", faq=[("Do you deliver?", "We deliver within 5 km.")], docs=[])
    questions = ["Do you deliver?", "hello", "Do you deliver to my town?", "What is the meaning of life?", "Do you deliver?"]
    request_ids = [(await chat(response, key, q, session=f"m{i}")).request_id for i, q in enumerate(questions)]
    assert len(set(request_ids)) == len(questions)

    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline:
        rows = await pg.fetch("SELECT event_id, request_id FROM conversations WHERE product_key_id = $1", key.id)
        turns = await pg.fetchval("SELECT coalesce(sum(turns), 0) FROM metrics_minute WHERE product_key_id = $1", key.id)
        if len(rows) >= len(questions) and turns >= len(questions):
            break
        await asyncio.sleep(0.2)
    assert sorted(r["request_id"] for r in rows) == sorted(request_ids), "every turn stored once"
    assert len({r["event_id"] for r in rows}) == len(questions)
    await asyncio.sleep(1.0)  # a late duplicate would show up here
    turns = await pg.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key.id)
    assert turns == len(questions)

    reply = await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=key.secret), timeout=10)
    assert reply.total.turns == len(questions)
    assert reply.total.no_answers >= 1
    assert 0 < reply.total.total_ms.p50 <= reply.total.total_ms.p95 <= reply.total.total_ms.p99
    by_strategy = await analytics.GetMetrics(
        analytics_pb2.GetMetricsRequest(product_key_id=key.id, group_by=analytics_pb2.GROUP_BY_STRATEGY),
        metadata=admin, timeout=10
    )
    assert sum(p.turns for p in by_strategy.points) == len(questions)
    assert {p.group for p in by_strategy.points} >= {"GREETING", "NO_ANSWER"}


async def test_every_service_is_serving_and_reflects_its_name(services, settings):
    expected = {
        settings.search_addr: "parley.v1.SearchService",
        settings.response_addr: "parley.v1.ResponseService",
        settings.scraper_addr: "parley.v1.ScraperService",
        settings.analytics_addr: "parley.v1.AnalyticsService",
    }
    for addr, service in expected.items():
        async with channel(addr) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, addr
            live = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
            assert live.status == health_pb2.HealthCheckResponse.SERVING, addr
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)

            async def requests():
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            names = set()
            async for reply in stub.ServerReflectionInfo(requests(), timeout=5):
                names = {s.name for s in reply.list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names


async def test_admin_rpcs_need_the_admin_token(search):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.ListProductKeys(search_pb2.ListProductKeysRequest(), timeout=5)
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.ListProductKeys(
            search_pb2.ListProductKeysRequest(), metadata=(("x-parley-admin-token", "wrong"),), timeout=5
        )
    assert rpc_error(info).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_metrics_endpoint_counts_rpcs(services, test_env, response, key_a):
    import httpx

    await chat(response, key_a, "hello")
    port = test_env["PARLEY_RESPONSE_METRICS_PORT"]
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    assert 'parley_grpc_server_handled_total{code="OK",method="Chat",service="response"}' in body
    assert "parley_grpc_server_handling_seconds_bucket" in body
