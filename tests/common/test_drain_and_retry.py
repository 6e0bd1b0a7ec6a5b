"""A draining server and its clients: calls refused while it drains do not hold its stop back, a stop
whose closing of clients hangs ends at its bound, and a client channel retries a read refused by a
draining replica on the connection made after it."""

from __future__ import annotations

import asyncio
import socket

import grpc

from services.common.grpc_server import DRAIN_QUIET_MAX_SECONDS, ServiceSpec, channel, serve

METHOD = "/parley.test.Echo/Call"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _echo(request: bytes, context) -> bytes:
    return request


def _register(server) -> None:
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("parley.test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(_echo)}),
    ))


def _spec(port: int, **fields) -> ServiceSpec:
    return ServiceSpec(name="echo", service_names=["parley.test.Echo"], register=_register,
                       bind=f"127.0.0.1:{port}", check_interval_seconds=0.05, grace_seconds=1, **fields)


async def _serving(ch: grpc.aio.Channel) -> None:
    for _ in range(200):
        try:
            await ch.unary_unary(METHOD)(b"x", timeout=1)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    raise AssertionError("the server never served")


async def test_calls_refused_while_draining_do_not_hold_the_stop_to_its_longest_pause():
    port, stop = _port(), asyncio.Event()
    server = asyncio.create_task(serve(_spec(port), stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await _serving(ch)

        async def keep_calling() -> None:     # a client that keeps sending on its connection
            while True:
                try:
                    await ch.unary_unary(METHOD)(b"x", timeout=1)
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.02)

        caller = asyncio.create_task(keep_calling())
        await asyncio.sleep(0.2)
        began = asyncio.get_running_loop().time()
        stop.set()
        await asyncio.wait_for(server, 10)
        took = asyncio.get_running_loop().time() - began
        caller.cancel()
    assert took < DRAIN_QUIET_MAX_SECONDS / 2, f"the stop took {took:.2f} s"


async def test_a_stop_whose_clients_never_close_ends_at_its_bound():
    port, stop = _port(), asyncio.Event()

    async def hangs() -> None:
        await asyncio.sleep(3600)

    server = asyncio.create_task(serve(_spec(port, on_stop=hangs, stop_seconds=0.5), stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await _serving(ch)
    stop.set()
    await asyncio.wait_for(server, 5)


async def test_a_read_refused_by_a_draining_replica_is_retried_on_the_next_connection():
    """One address, two servers in turn: the first drains (refusing, then stopping); the channel's
    retry of the refused call reaches the second, started on the same port."""
    port, first_stop = _port(), asyncio.Event()
    first = asyncio.create_task(serve(_spec(port), first_stop))
    async with channel(f"127.0.0.1:{port}", retry=[("parley.test.Echo", "Call")]) as ch:
        await _serving(ch)
        first_stop.set()
        await asyncio.sleep(0.05)                      # draining: refusing calls
        call = asyncio.ensure_future(ch.unary_unary(METHOD)(b"still answered", timeout=5))
        await asyncio.wait_for(first, 10)
        second_stop = asyncio.Event()
        second = asyncio.create_task(serve(_spec(port), second_stop))
        try:
            assert await call == b"still answered"
        finally:
            second_stop.set()
            await asyncio.wait_for(second, 10)
