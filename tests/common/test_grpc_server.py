"""The shared gRPC bootstrap: readiness gate, error mapping, and a drain that finishes in-flight calls."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import InvalidArgument, ResourceExhausted, with_retry_hints
from services.common.grpc_server import (DRAIN_QUIET_MAX_SECONDS, ServerInterceptor, ServiceSpec, Transport, _Gate,
                                         channel, serve)
from services.common.metrics import RPC_HANDLED

METHOD = "/parley.test.Slow/Call"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _call(request: bytes, context) -> bytes:
    if request == b"bad":
        raise InvalidArgument("bad request, as the test intended")
    if request == b"boom":
        raise RuntimeError("a bug")
    if request.startswith(b"bound "):      # a bound of the service's own on a dependency passes
        async with asyncio.timeout(float(request.split()[1])):
            await asyncio.sleep(60)
    await asyncio.sleep(float(request or b"0"))
    return b"done"


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("parley.test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(_call)}),
    ))


async def test_gate_errors_and_drain():
    port = _port()
    dependency_up = asyncio.Event()

    async def on_start() -> None:
        if not dependency_up.is_set():
            raise ConnectionError("dependency not up yet")

    stop = asyncio.Event()
    spec = ServiceSpec(name="slow", service_names=["parley.test.Slow"], register=_register,
                       bind=f"127.0.0.1:{port}", on_start=on_start, check_interval_seconds=0.05, grace_seconds=5)
    server = asyncio.create_task(serve(spec, stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(METHOD)
        health = health_pb2_grpc.HealthStub(ch)
        await ch.channel_ready()
        # Before the dependency answers: NOT_SERVING, calls refused with UNAVAILABLE.
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"0", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "starting" in info.value.details()

        dependency_up.set()
        for _ in range(100):
            if (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        assert await call(b"0", timeout=5) == b"done"

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"bad", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "as the test intended" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"boom", timeout=5)
        assert info.value.code() == grpc.StatusCode.INTERNAL and "incident" in info.value.details()
        assert "a bug" not in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ch.unary_unary("/parley.test.Slow/NoSuchMethod")(b"0", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A timeout of the service's own, the caller's deadline far off (a PostgreSQL statement's client
        # timeout on a frozen server): not DEADLINE_EXCEEDED, kept for the caller's deadline, but
        # UNAVAILABLE with a retry hint; a timeout met at the caller's deadline stays DEADLINE_EXCEEDED.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"bound 0.2", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert dict(info.value.trailing_metadata())["retry-after"] == "1"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"bound 0.2")       # no deadline at all
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"bound 0.95", timeout=1)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, info.value.details()

        # SIGTERM's equivalent while a call is in flight: the call completes.
        in_flight = asyncio.ensure_future(call(b"0.5", timeout=10))
        await asyncio.sleep(0.1)
        stop.set()
        assert await in_flight == b"done"
    await asyncio.wait_for(server, timeout=10)


async def test_interceptor_wraps_each_method_once_and_counts_every_call():
    """The wrapped handler is built on a method's first call and reused; each call is still counted
    under its own status."""
    gate = _Gate()
    gate.ready = True
    interceptor = ServerInterceptor("cached", gate)
    looked_up = []

    async def continuation(details):
        looked_up.append(details.method)
        return grpc.unary_unary_rpc_method_handler(_call)

    class Details:
        method = METHOD

    class Context:
        def __init__(self) -> None:
            self.status = None

        def code(self):
            return self.status

        def set_trailing_metadata(self, trailers) -> None:
            pass

        async def abort(self, code, details):
            self.status = code
            raise grpc.aio.AbortError()

    def handled(code: str) -> float:
        return RPC_HANDLED.labels("cached", "Call", code)._value.get()

    before_ok, before_bad = handled("OK"), handled("INVALID_ARGUMENT")
    handlers = [await interceptor.intercept_service(continuation, Details()) for _ in range(3)]
    assert looked_up == [METHOD]
    assert handlers[0] is handlers[1] is handlers[2]
    for request in (b"0", b"0", b"bad"):
        try:
            await handlers[0].unary_unary(request, Context())
        except grpc.aio.AbortError:
            pass
    assert handled("OK") - before_ok == 2
    assert handled("INVALID_ARGUMENT") - before_bad == 1


async def test_the_stop_waits_for_a_pause_in_new_calls_but_not_for_ever():
    """gRPC core cancels the calls it received but the server had not taken up when the server stops
    (grpc/grpc#41785): the drain stops the server after a pause in new calls, or after a bound."""
    gate = _Gate()
    assert await gate.quiet(0.2, 2.0) < 0.1          # no call for long: at once

    async def calls(every: float, until: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + until
        while loop.time() < end:
            gate.last_call = time.monotonic()
            await asyncio.sleep(every)

    caller = asyncio.create_task(calls(0.02, 0.5))
    await asyncio.sleep(0.01)
    waited = await gate.quiet(0.2, 2.0)              # calls for 0.5 s, then a pause of 0.2 s
    assert 0.5 <= waited < 1.5
    await caller
    caller = asyncio.create_task(calls(0.02, 3.0))
    await asyncio.sleep(0.01)
    waited = await gate.quiet(0.2, 1.0)              # no pause: the bound
    assert 1.0 <= waited < 1.5
    caller.cancel()


async def test_every_retry_hint_is_sent_in_seconds_and_in_milliseconds():
    """An error with a retry hint in one convention (retry-after in seconds, retry-after-ms) is sent
    with both, whatever raised it; a service still starting says when to retry in both too."""
    gate = _Gate()
    raised = {
        b"seconds": ResourceExhausted("limited", trailers={"retry-after": "7"}),
        b"ms": ResourceExhausted("limited", trailers={"retry-after-ms": "1500"}),
        b"none": InvalidArgument("no hint"),
    }

    async def hinted(request: bytes, context) -> bytes:
        raise raised[request]

    server = grpc.aio.server(interceptors=[ServerInterceptor("hints", gate)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "parley.test.Hints", {"Call": grpc.unary_unary_rpc_method_handler(hinted)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/parley.test.Hints/Call")

            async def trailers(request: bytes) -> tuple[grpc.StatusCode, dict]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request, timeout=5)
                hints = {k: v for k, v in info.value.trailing_metadata() if k.startswith("retry-after")}
                return info.value.code(), hints

            assert await trailers(b"seconds") == (
                grpc.StatusCode.UNAVAILABLE, {"retry-after": "1", "retry-after-ms": "1000"})  # starting
            gate.ready = True
            assert await trailers(b"seconds") == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, {"retry-after": "7", "retry-after-ms": "7000"})
            assert await trailers(b"ms") == (
                grpc.StatusCode.RESOURCE_EXHAUSTED, {"retry-after": "2", "retry-after-ms": "1500"})
            assert await trailers(b"none") == (grpc.StatusCode.INVALID_ARGUMENT, {})
    finally:
        await server.stop(None)


def test_retry_hints_are_completed_and_odd_ones_left_alone():
    assert with_retry_hints({"retry-after": "0.2"}) == {"retry-after": "0.2", "retry-after-ms": "200"}
    assert with_retry_hints({"retry-after-ms": "1", "x": "y"}) == {"retry-after-ms": "1", "retry-after": "1", "x": "y"}
    assert with_retry_hints({"retry-after": "3", "retry-after-ms": "2500"}) == {"retry-after": "3",
                                                                               "retry-after-ms": "2500"}
    for odd in ({"retry-after": "soon"}, {"retry-after-ms": "nan"}, {"retry-after": "inf"}, {}):
        assert with_retry_hints(odd) == odd


async def _serving(transport: Transport) -> tuple[asyncio.Task, asyncio.Event, int]:
    port, stop = _port(), asyncio.Event()
    server = asyncio.create_task(serve(_spec(port, name="bounded", transport=transport), stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await _until_serving(ch)
    return server, stop, port


async def test_calls_that_never_send_their_request_are_bounded_in_number_and_in_time():
    """A client opens calls and never sends their request: grpc waits for it before any of the
    service's code (and so any key check) runs. Past the process's limit a call is RESOURCE_EXHAUSTED,
    and a connection's age and grace end the waiting ones."""
    server, stop, port = await _serving(Transport(max_concurrent_rpcs=3, max_connection_age_seconds=1,
                                                  max_connection_age_grace_seconds=1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            silent = [ch.stream_unary(METHOD)() for _ in range(3)]
            await asyncio.sleep(0.5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(METHOD)(b"0", timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            ended = await asyncio.wait_for(asyncio.gather(*silent, return_exceptions=True), 15)
            assert all(isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE
                       for e in ended), ended
            assert await ch.unary_unary(METHOD)(b"0", timeout=5) == b"done"    # the slots are free again
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def test_a_client_is_made_to_reconnect_once_its_connection_is_old():
    """A connection past its age is closed (GOAWAY) once its calls end, so a client behind a Service
    reconnects, and may reach a replica added since; its calls go on meanwhile."""
    server, stop, port = await _serving(Transport(max_connection_age_seconds=1, max_connection_age_grace_seconds=5))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await ch.channel_ready()
            states = set()
            for _ in range(100):
                states.add(ch.get_state())
                if grpc.ChannelConnectivity.IDLE in states:
                    break
                await asyncio.sleep(0.05)
            assert grpc.ChannelConnectivity.IDLE in states, states
            assert await ch.unary_unary(METHOD)(b"0", timeout=5) == b"done"
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def test_a_call_past_its_deadline_or_cancelled_is_counted_so_not_as_ok():
    server, stop, port = await _serving(Transport())

    def handled(code: str) -> float:
        return RPC_HANDLED.labels("bounded", "Call", code)._value.get()

    before = {code: handled(code) for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED")}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await ch.unary_unary(METHOD)(b"1", timeout=0.2)
            call = ch.unary_unary(METHOD)(b"1", timeout=5)
            await asyncio.sleep(0.2)
            call.cancel()
            for _ in range(100):
                if handled("CANCELLED") > before["CANCELLED"] and handled("DEADLINE_EXCEEDED") > before["DEADLINE_EXCEEDED"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
    assert handled("DEADLINE_EXCEEDED") - before["DEADLINE_EXCEEDED"] == 1
    assert handled("CANCELLED") - before["CANCELLED"] == 1
    assert handled("OK") - before["OK"] == 0


# --- a draining server and its clients -----------------------------------------------------------

def _spec(port: int, name: str = "slow", **fields) -> ServiceSpec:
    return ServiceSpec(name=name, service_names=["parley.test.Slow"], register=_register,
                       bind=f"127.0.0.1:{port}", check_interval_seconds=0.05, grace_seconds=1, **fields)


async def _until_serving(ch: grpc.aio.Channel) -> None:
    for _ in range(200):
        try:
            await ch.unary_unary(METHOD)(b"0", timeout=1)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    raise AssertionError("the server never served")


async def test_calls_refused_while_draining_do_not_hold_the_stop_to_its_longest_pause():
    port, stop = _port(), asyncio.Event()
    server = asyncio.create_task(serve(_spec(port), stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await _until_serving(ch)

        async def keep_calling() -> None:     # a client that keeps sending on its connection
            while True:
                try:
                    await ch.unary_unary(METHOD)(b"0", timeout=1)
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
        await _until_serving(ch)
    stop.set()
    await asyncio.wait_for(server, 5)


async def test_a_read_refused_by_a_draining_replica_is_retried_on_the_next_connection():
    """One address, two servers in turn: the first drains (refusing, then stopping); the channel's
    retry of the refused call reaches the second, started on the same port."""
    port, first_stop = _port(), asyncio.Event()
    first = asyncio.create_task(serve(_spec(port), first_stop))
    async with channel(f"127.0.0.1:{port}", retry=[("parley.test.Slow", "Call")]) as ch:
        await _until_serving(ch)
        first_stop.set()
        await asyncio.sleep(0.05)                      # draining: refusing calls
        call = asyncio.ensure_future(ch.unary_unary(METHOD)(b"0", timeout=5))
        await asyncio.wait_for(first, 10)
        second_stop = asyncio.Event()
        second = asyncio.create_task(serve(_spec(port), second_stop))
        try:
            assert await call == b"done"
        finally:
            second_stop.set()
            await asyncio.wait_for(second, 10)


async def test_health_watch_streams_each_change_and_client_side_health_checking_serves():
    """Health/Watch is written through context.write by grpcio's servicer, not yielded: it streams the
    status, then its change at the drain; a channel that checks health itself (round_robin with
    healthCheckConfig, as a gateway may) sends calls."""
    port, stop = _port(), asyncio.Event()
    server = asyncio.create_task(serve(_spec(port), stop))
    config = ('{"loadBalancingConfig": [{"round_robin": {}}], '
              '"healthCheckConfig": {"serviceName": ""}}')
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.service_config", config)]) as ch:
        await _until_serving(ch)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert await ch.unary_unary(METHOD)(b"0", timeout=5) == b"done"
        stop.set()
        changed = await watch.read()
        assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    await asyncio.wait_for(server, 10)
