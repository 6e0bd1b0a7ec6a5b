"""The response service process itself with GROQ_API_KEY set: its wiring, readiness and answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2, response_pb2_grpc
from services.launcher import Launcher
from tests.response.conftest import SMALL
from bench.harness import free_port


async def test_response_process_answers_with_groq_when_the_key_is_set(services, test_env, llm, shop, tmp_path: Path):
    addr = f"127.0.0.1:{free_port()}"
    env = {**test_env, "GROQ_API_KEY": "gsk_test", "PARLEY_GROQ_BASE_URL": llm.base_url,
           "PARLEY_RESPONSE_ADDR": addr, "PARLEY_RESPONSE_METRICS_PORT": str(free_port())}
    launcher = Launcher(tmp_path, env=env)
    launcher.start(["response"])
    try:
        async with channel(addr) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(300):
                assert launcher.pid("response"), f"response exited; see {launcher.log_file('response')}"
                try:
                    if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                await asyncio.sleep(0.1)
            stub = response_pb2_grpc.ResponseServiceStub(ch)
            request = response_pb2.ChatRequest(product_key=shop.secret, message="How much does the Plus plan cost?")
            chunks = [c async for c in stub.ChatStream(request, timeout=10)]
            again = await stub.Chat(request, timeout=10)
    finally:
        launcher.stop(["response"])
    final = chunks[-1].final
    assert final.model == SMALL and final.cache_status == common_pb2.CACHE_STATUS_MISS
    assert "".join(c.delta for c in chunks[:-1]) == final.answer
    assert again.cache_status == common_pb2.CACHE_STATUS_HIT and again.answer == final.answer
    assert llm.count() == 1
