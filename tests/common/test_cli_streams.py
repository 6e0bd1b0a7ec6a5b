"""The CLI's watching commands (`parley ingest`, `parley metrics --watch`) outlive a stream cut by
its server: a replica that drains, or that closes a connection past its age and grace."""

from __future__ import annotations

import asyncio
import itertools
import socket

import grpc
import pytest

from services.cli import resumed
from services.common.grpc_server import ServiceSpec, Transport, serve

METHOD = "/parley.test.Ticks/Watch"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_watch_goes_on_across_streams_its_server_cuts():
    opened = itertools.count(1)
    seen_opens: list[int] = []

    async def watch(request: bytes, context):
        seen_opens.append(next(opened))
        for tick in itertools.count():
            yield str(tick).encode()
            await asyncio.sleep(0.1)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "parley.test.Ticks", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}),))

    port, stop = _port(), asyncio.Event()
    spec = ServiceSpec(name="ticks", service_names=["parley.test.Ticks"], register=register,
                       bind=f"127.0.0.1:{port}", check_interval_seconds=0.05, grace_seconds=1,
                       transport=Transport(max_connection_age_seconds=0.5, max_connection_age_grace_seconds=0.5))
    server = asyncio.create_task(serve(spec, stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await ch.channel_ready()
            replies = 0
            async for _ in resumed(lambda: ch.unary_stream(METHOD)(b"", timeout=30)):
                replies += 1
                if len(seen_opens) >= 3:
                    break
            assert replies > 3 and len(seen_opens) >= 3
            # Without resuming, the first cut ends the watch.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in ch.unary_stream(METHOD)(b"", timeout=30):
                    pass
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def test_a_watch_that_keeps_failing_or_fails_otherwise_ends():
    calls = 0

    def failing(code: grpc.StatusCode):
        def open_stream():
            nonlocal calls
            calls += 1

            async def replies():
                raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(("retry-after-ms", "1"),))
                yield  # noqa: unreachable - makes this an async generator
            return replies()
        return open_stream

    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in resumed(failing(grpc.StatusCode.UNAVAILABLE), tries=3):
            pass
    assert calls == 4
    calls = 0
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in resumed(failing(grpc.StatusCode.PERMISSION_DENIED)):
            pass
    assert calls == 1
