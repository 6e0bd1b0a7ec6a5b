"""The search service as a process: PostgreSQL is its one hard dependency. Started with nothing
listening at its Kafka and Redis addresses, it says SERVING (the two as NOT_SERVING `dependency/<name>`
entries) and plans from PostgreSQL; its producer of knowledge events starts on first use."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import free_port
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.launcher import Launcher
from tests.conftest import make_key
from tests.scraper.test_process import _health, _soft_down, _until

pytestmark = pytest.mark.integration


@pytest.mark.timeout(150)
async def test_search_serves_plans_without_kafka_and_redis(services, search, admin, test_env, tmp_path):
    key = await make_key(search, admin, "soft-deps", faq=[],
                         docs=[("Returns", "Unused items can be sent back within thirty days of delivery.")])
    addr = f"127.0.0.1:{free_port()}"
    launcher = Launcher(tmp_path, env={**test_env, "PARLEY_SEARCH_ADDR": addr,
                                       "PARLEY_SEARCH_METRICS_PORT": str(free_port()),
                                       "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                                       "PARLEY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    launcher.start(["search"])
    try:
        async with channel(addr) as ch:
            health = health_pb2_grpc.HealthStub(ch)

            async def serving() -> bool:
                assert launcher.pid("search"), f"search exited; see {launcher.log_file('search')}"
                return await _health(health) == health_pb2.HealthCheckResponse.SERVING

            await _until(serving, 90, f"search never said SERVING; see {launcher.log_file('search')}")
            for name in ("kafka", "redis"):
                await _until(lambda n=name: _soft_down(health, n), 15, f"dependency/{name} not reported down")
            plan = await search_pb2_grpc.SearchServiceStub(ch).Plan(
                search_pb2.PlanRequest(product_key=key.secret, message="How many days do I have to send back unused items?"),
                timeout=10)
            assert plan.strategy == common_pb2.STRATEGY_KNOWLEDGE and "thirty days" in plan.passages[0].text
    finally:
        launcher.stop(["search"])
