"""The search service as a process: PostgreSQL is its one hard dependency. Started with nothing
listening at its Kafka and Redis addresses, it says SERVING (the two as NOT_SERVING `dependency/<name>`
entries) and plans from PostgreSQL; its producer of knowledge events starts on first use."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import free_port
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, events_pb2, search_pb2, search_pb2_grpc
from services.launcher import Launcher
from tests.conftest import make_key, until_serving
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


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]) -> None:
    """One connection to the Kafka bootstrap port, forwarded to the broker both ways."""
    upstream_reader, upstream_writer = await asyncio.open_connection(*target)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.mark.timeout(180)
async def test_an_admin_change_made_while_kafka_is_away_succeeds_and_is_announced_once_it_is_back(
        services, search, admin, settings, test_env, tmp_path):
    """A search process started while nothing answers at its Kafka bootstrap address: a committed
    knowledge change is not failed for its announcement (parley.knowledge.updated.v1); the event waits,
    and is published once the broker can be reached (here: the bootstrap port starts forwarding to it)."""
    key = await make_key(search, admin, "kafka-away-admin", faq=[], docs=[])
    port = free_port()
    addr = f"127.0.0.1:{free_port()}"
    launcher = Launcher(tmp_path, env={**test_env, "PARLEY_SEARCH_ADDR": addr,
                                       "PARLEY_SEARCH_METRICS_PORT": str(free_port()),
                                       "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    topic = settings.topic("knowledge_updated")
    # The key is new: every event of it on the topic is this test's.
    reader = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                              auto_offset_reset="earliest")
    await reader.start()
    server = None
    launcher.start(["search"])
    try:
        async with channel(addr) as ch:
            await until_serving(launcher, "search", ch)
            stub = search_pb2_grpc.SearchServiceStub(ch)
            added = await stub.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you ship abroad?",
                                                               answer="Yes, to every country in the EU."),
                                      metadata=admin, timeout=10)
            plan = await stub.Plan(search_pb2.PlanRequest(product_key=key.secret, message="Do you ship abroad?"),
                                   timeout=10)
            assert plan.strategy == common_pb2.STRATEGY_FAQ
            version = added.knowledge_version
        host, _, broker_port = settings.kafka_bootstrap.partition(",")[0].rpartition(":")
        server = await asyncio.start_server(lambda r, w: _forward(r, w, (host, int(broker_port))), "127.0.0.1", port)
        deadline = time.monotonic() + 60
        announced = []
        while not announced:
            assert time.monotonic() < deadline, "the change was never announced once Kafka was back"
            for records in (await reader.getmany(timeout_ms=500)).values():
                events = [events_pb2.KnowledgeUpdated.FromString(r.value) for r in records]
                announced += [e for e in events if e.product_key_id == key.id]
        assert [(e.reason, e.knowledge_version) for e in announced] == [("faq_added", version)]
    finally:
        launcher.stop(["search"])
        await reader.stop()
        if server is not None:
            server.close()
