"""Dependencies that accept connections and answer nothing (every process stopped with SIGSTOP, as a
lost network path or a stalled host would look): health says so while it lasts, and recovers after."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.stack import frozen
from services.common import db
from services.common.grpc_server import channel

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The health watcher looks every 5 s while serving (ServiceSpec.check_interval_seconds), and the
# PostgreSQL check gives up after db.PING_SECONDS: a freeze shows within their sum, and a margin.
POSTGRES_SHOWN_SECONDS = 5.0 + db.PING_SECONDS + 1.5
POSTGRES_FROZEN_SECONDS = 12.0
# While not serving the watcher looks every 0.5 s: a thawed PostgreSQL answers its next check.
POSTGRES_BACK_SECONDS = 4.0
KAFKA_FROZEN_SECONDS = 20.0
# The local broker can take ~20 s after a freeze to lead its partitions again.
KAFKA_BACK_SECONDS = 40.0


async def _status(ch: grpc.aio.Channel, service: str) -> int | None:
    """The health status of `service` (None: not registered, or no answer within a second)."""
    try:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
    except grpc.aio.AioRpcError:
        return None
    return reply.status


async def _until(ch: grpc.aio.Channel, service: str, wanted: int, timeout: float, what: str) -> float:
    """Seconds until `service` says `wanted`; fails with `what` and the last status after `timeout`."""
    started = time.monotonic()
    while True:
        status = await _status(ch, service)
        if status == wanted:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status) if status is not None else "no answer"
            raise AssertionError(f"{what}: still {name} after {timeout:.1f} s")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_readiness_is_not_serving_while_postgres_is_frozen_and_serving_once_it_is_thawed(services, settings):
    """A frozen PostgreSQL: the readiness check of a service whose hard dependency it is ends within
    its timeout (it ended only when PostgreSQL was thawed, and then said NOT_SERVING a second late)."""
    async with channel(settings.search_addr) as search_ch, channel(settings.analytics_addr) as analytics_ch:
        watched = {"search": search_ch, "analytics": analytics_ch}
        for name, ch in watched.items():
            await _until(ch, "", SERVING, 60, f"{name} before the freeze")
        with frozen("postgres"):
            frozen_at = time.monotonic()
            shown = await asyncio.gather(*(
                _until(ch, "", NOT_SERVING, POSTGRES_SHOWN_SECONDS, f"{name} readiness with PostgreSQL frozen")
                for name, ch in watched.items()))
            # Checks keep failing on time for the rest of the freeze (no connection or task waits on it).
            while time.monotonic() - frozen_at < POSTGRES_FROZEN_SECONDS:
                for name, ch in watched.items():
                    assert await _status(ch, "") == NOT_SERVING, f"{name} said SERVING with PostgreSQL frozen"
                await asyncio.sleep(0.5)
        back = await asyncio.gather(*(
            _until(ch, "", SERVING, POSTGRES_BACK_SECONDS, f"{name} readiness after PostgreSQL was thawed")
            for name, ch in watched.items()))
        # No late failure of a check that was waiting on the frozen server.
        steady_until = time.monotonic() + 3.0
        while time.monotonic() < steady_until:
            for name, ch in watched.items():
                assert await _status(ch, "") == SERVING, f"{name} NOT_SERVING again after PostgreSQL came back"
            await asyncio.sleep(0.1)
        assert max(shown) < POSTGRES_SHOWN_SECONDS and max(back) < POSTGRES_BACK_SECONDS, (shown, back)


@pytest.mark.timeout(120)
async def test_the_postgres_check_ends_on_time_through_a_long_freeze_and_keeps_nothing(stack):
    """db.ping against a frozen PostgreSQL, again and again as the health watcher does: each ends
    within its timeout, no task or connection piles up, and the first one after the thaw succeeds."""
    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=3)
    try:
        await db.ping(pool)
        tasks_before = len(asyncio.all_tasks())
        files_before = len(os.listdir("/proc/self/fd"))
        with frozen("postgres"):
            frozen_at = time.monotonic()
            pings = 0
            while time.monotonic() - frozen_at < 10.0:
                started = time.monotonic()
                with pytest.raises(TimeoutError, match="PostgreSQL did not answer"):
                    await db.ping(pool, timeout_seconds=1.0)
                assert time.monotonic() - started < 1.5
                pings += 1
                await asyncio.sleep(0.2)        # a cancelled task of asyncpg's ends at its next turn
                # At most the pool's one reconnection to keep its minimum size, besides this test.
                assert len(asyncio.all_tasks()) <= tasks_before + 1, asyncio.all_tasks()
                assert len(os.listdir("/proc/self/fd")) <= files_before + 1, "sockets left open"
        assert pings >= 6
        thawed_at = time.monotonic()
        while True:
            try:
                await db.ping(pool, timeout_seconds=1.0)
                break
            except TimeoutError:
                assert time.monotonic() - thawed_at < POSTGRES_BACK_SECONDS, "PostgreSQL still not answering"
        assert pool.get_size() <= 3
    finally:
        await asyncio.wait_for(pool.close(), timeout=30)


@pytest.mark.timeout(180)
async def test_the_knowledge_follower_detail_is_not_serving_while_the_broker_isfrozen(services, settings):
    """A frozen broker: the consumer retries inside aiokafka and raises nothing, yet the knowledge
    follower's health detail turns NOT_SERVING (it stayed SERVING through a 30 s freeze), in search
    (which had no such detail) as in response, and SERVING again once the broker is back."""
    detail = "dependency/knowledge-follower"
    async with channel(settings.search_addr) as search_ch, channel(settings.response_addr) as response_ch:
        watched = {"search": search_ch, "response": response_ch}
        for name, ch in watched.items():
            await _until(ch, detail, SERVING, 60, f"{name} {detail} before the freeze")
        with frozen("kafka"):
            await asyncio.gather(*(
                _until(ch, detail, NOT_SERVING, KAFKA_FROZEN_SECONDS, f"{name} {detail} with the broker frozen")
                for name, ch in watched.items()))
        await asyncio.gather(*(
            _until(ch, detail, SERVING, KAFKA_BACK_SECONDS, f"{name} {detail} after the broker was thawed")
            for name, ch in watched.items()))


async def test_a_key_check_while_postgres_is_frozen_ends_within_its_bound(stack):
    """A key check (what every call of a key Redis does not hold asks) gives up after its statement
    bound, not the pool's 30 s statement timeout, and the pool answers again after the thaw."""
    from services.common.product_keys import KEY_CHECK_ACQUIRE_SECONDS, KEY_CHECK_STATEMENT_SECONDS, validate_key

    pool = await db.create_pool(stack.postgres_dsn, min_size=1, max_size=2)
    try:
        await validate_key(pool, b"\x00" * 32)                  # connected before the freeze
        with frozen("postgres"):
            began = time.monotonic()
            with pytest.raises(TimeoutError):
                await validate_key(pool, b"\x01" * 32)
            took = time.monotonic() - began
        assert took < KEY_CHECK_ACQUIRE_SECONDS + KEY_CHECK_STATEMENT_SECONDS + 1, f"the check took {took:.1f} s"
        for _ in range(50):
            try:
                assert await validate_key(pool, b"\x02" * 32) is None
                break
            except (TimeoutError, OSError):
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("the pool does not answer after the thaw")
    finally:
        await asyncio.wait_for(pool.close(), 10)
