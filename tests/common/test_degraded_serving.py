"""The shared bootstrap when dependencies fail: soft dependencies leave readiness SERVING (and are
reported as health details), and an unreachable database is UNAVAILABLE with a retry hint."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import LIVENESS, ServiceSpec, serve

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _call(request: bytes, context) -> bytes:
    if request == b"pg-restarting":
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    if request == b"pg-gone":
        await asyncpg.connect("postgresql://nobody@127.0.0.1:9/none", timeout=2)  # refused
    if request == b"pg-shutdown":
        raise asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")
    if request == b"pg-shutdown-mid-query":
        raise asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    if request == b"pg-thawed-mid-begin":
        raise asyncpg.exceptions.ActiveSQLTransactionError("SET TRANSACTION ISOLATION LEVEL must be called before "
                                                           "any query")
    return b"done"


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("parley.test.Db", {"Call": grpc.unary_unary_rpc_method_handler(_call)}),
    ))


async def _status(health, service: str = "") -> int:
    return (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


@contextlib.asynccontextmanager
async def _served(**spec_fields) -> AsyncIterator[grpc.aio.Channel]:
    """The test service through the shared bootstrap (probes every 0.05 s) and a ready channel to it;
    stopped afterwards."""
    port = _port()
    stop = asyncio.Event()
    spec = ServiceSpec(name="db", service_names=["parley.test.Db"], register=_register, bind=f"127.0.0.1:{port}",
                       check_interval_seconds=0.05, grace_seconds=1, **spec_fields)
    server = asyncio.create_task(serve(spec, stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await ch.channel_ready()
            yield ch
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)


async def test_soft_dependencies_do_not_take_readiness_and_database_errors_are_unavailable():
    kafka_up = False

    async def kafka() -> None:
        if not kafka_up:
            raise ConnectionError("broker unreachable")

    async with _served(soft_checks={"kafka": kafka}) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for _ in range(100):
            if await _status(health) == SERVING:
                break
            await asyncio.sleep(0.05)
        assert await _status(health) == SERVING           # Kafka down: still ready
        assert await _status(health, "dependency/kafka") == NOT_SERVING  # ...and said so
        assert await _status(health, LIVENESS) == SERVING
        kafka_up = True
        for _ in range(100):
            if await _status(health, "dependency/kafka") == SERVING:
                break
            await asyncio.sleep(0.05)
        assert await _status(health, "dependency/kafka") == SERVING

        call = ch.unary_unary("/parley.test.Db/Call")
        for request in (b"pg-restarting", b"pg-gone", b"pg-shutdown", b"pg-shutdown-mid-query", b"pg-thawed-mid-begin"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, request
            assert dict(info.value.trailing_metadata())["retry-after"] == "1"
            assert "127.0.0.1" not in info.value.details()  # no internal address passed on


async def test_a_hard_dependency_lost_after_start_is_not_called_starting():
    """Readiness lost after the service served (PostgreSQL gone mid-run): calls are UNAVAILABLE with a
    retry hint, and the message says a dependency is unreachable, not that the service is starting."""
    db_up = False

    async def postgres() -> None:
        if not db_up:
            raise ConnectionError("refused")

    async def refused(call) -> grpc.aio.AioRpcError:
        for _ in range(200):
            try:
                await call(b"ok", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc
            await asyncio.sleep(0.05)
        raise AssertionError("the call was never refused")

    async with _served(checks={"postgres": postgres}) as ch:
        call = ch.unary_unary("/parley.test.Db/Call")
        starting = await refused(call)
        assert starting.code() == grpc.StatusCode.UNAVAILABLE and "is starting" in starting.details()
        db_up = True
        for _ in range(200):
            try:
                assert await call(b"ok", timeout=5) == b"done"
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        db_up = False
        lost = await refused(call)
        assert lost.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot reach a dependency" in lost.details() and "starting" not in lost.details()
        assert dict(lost.trailing_metadata())["retry-after"] == "1"
