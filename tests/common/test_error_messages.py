"""Dependency failures reach the caller as UNAVAILABLE with a generic message: the downstream details
(internal addresses, driver messages) are logged, not passed on."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
import redis.exceptions

from services.common.grpc_server import ServiceSpec, serve


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_dependency_failures_are_unavailable_without_their_details():
    dead = _port()  # nothing listens there: a downstream gRPC service that is down

    async def call(request: bytes, context) -> bytes:
        if request == b"redis":
            raise redis.exceptions.ConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{dead}") as ch:
            return await ch.unary_unary("/parley.test.Down/Call")(b"", timeout=2)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "parley.test.Errors", {"Call": grpc.unary_unary_rpc_method_handler(call)}),))

    port, stop = _port(), asyncio.Event()
    server = asyncio.create_task(serve(ServiceSpec(
        name="errors", service_names=["parley.test.Errors"], register=register, bind=f"127.0.0.1:{port}",
        check_interval_seconds=0.05, grace_seconds=1), stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await ch.channel_ready()
            stub = ch.unary_unary("/parley.test.Errors/Call")
            for _ in range(100):
                try:
                    await stub(b"redis", timeout=5)
                except grpc.aio.AioRpcError as exc:
                    if "starting" not in (exc.details() or ""):
                        break
                await asyncio.sleep(0.05)
            for request, hidden in [(b"redis", "10.1.2.3"), (b"grpc", str(dead))]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub(request, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
                assert hidden not in info.value.details() and "retry" in info.value.details()
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)
