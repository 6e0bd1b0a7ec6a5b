"""One gRPC server bootstrap for every service: health, reflection, metrics, error mapping, drain."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from services.common.errors import (RETRY_AFTER_MS_TRAILER, RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS,
                                    ParleyError, Unavailable, as_unavailable, with_retry_hints)
from services.common.metrics import DEPENDENCY_UP, RPC_HANDLED, RPC_LATENCY, serve_metrics
from services.common.reflection import enable_reflection
from services.common.settings import CommonSettings
from services.common.runner import exit_after, when_ready

# A timeout met with less than this left of the caller's deadline is the caller's (DEADLINE_EXCEEDED);
# with more left, or no deadline, it is a bound of the service's own on a dependency (UNAVAILABLE).
OWN_DEADLINE_SLACK_SECONDS = 0.25

logger = logging.getLogger(__name__)

# Calls that work while the service is still waiting for its dependencies.
_ALWAYS_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Check = Callable[[], Awaitable[Any]]
LIVENESS = "liveness"


@dataclass
class Transport:
    """Bounds of a server's calls and connections (settings `PARLEY_GRPC_*`).

    Without them a client can open calls without end, also calls that never send their request
    (grpc reads it before any of the service's code runs, so no key check sees them): each holds
    memory until the pod is killed. A connection's age makes every client reconnect now and then: a
    client's one connection through a Kubernetes Service sticks to one replica otherwise, and replicas
    an autoscaler adds get none of its calls. Its grace bounds the calls on a connection past its age."""

    max_concurrent_rpcs: int = 2000
    max_streams_per_connection: int = 256
    max_connection_age_seconds: float = 60.0
    max_connection_age_grace_seconds: float = 600.0
    keepalive_seconds: float = 120.0   # a ping on an idle connection finds a client that is gone

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Transport:
        return cls(settings.grpc_max_concurrent_rpcs, settings.grpc_max_streams_per_connection,
                   settings.grpc_max_connection_age_seconds, settings.grpc_max_connection_age_grace_seconds)

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.max_connection_age_ms", int(self.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_seconds * 1000)),
            ("grpc.keepalive_time_ms", int(self.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]


# The longest a service's on_stop may take (closing its clients, draining its outbox).
STOP_SECONDS = 30.0


@dataclass
class ServiceSpec:
    """What a service contributes to the shared bootstrap."""

    name: str                                    # short name, e.g. "search"
    service_names: Sequence[str]                 # full gRPC service names, for health + reflection
    register: Callable[[grpc.aio.Server], None]  # adds the servicers
    bind: str                                    # host:port
    metrics_port: int = 0
    on_start: Callable[[], Awaitable[None]] | None = None   # connect dependencies (retried)
    on_stop: Callable[[], Awaitable[None]] | None = None    # close them, after the drain
    checks: dict[str, Check] = field(default_factory=dict)  # dependency name -> probe
    # Probed and reported (health name "dependency/<name>", metric parley_dependency_up) but never
    # readiness: a soft dependency that is down degrades answers, it does not stop them.
    soft_checks: dict[str, Check] = field(default_factory=dict)
    check_interval_seconds: float = 5.0
    grace_seconds: float = 20.0
    # What on_stop may take; past it the process goes on to exit (its Deployment's termination grace
    # covers preStop + DRAIN_QUIET_MAX_SECONDS + grace_seconds + this).
    stop_seconds: float = STOP_SECONDS
    max_message_bytes: int = 4 * 1024 * 1024
    transport: Transport = field(default_factory=Transport)
    # Set when the drain begins: a stream that never ends by itself (StreamMetrics) ends on it.
    draining: asyncio.Event = field(default_factory=asyncio.Event)


# A status message travels percent-encoded in the trailers (every byte outside printable ASCII as
# three characters): one that echoes a caller's 100 kB id passed the client's metadata limit, and the
# caller got RESOURCE_EXHAUSTED instead of the error. Messages are cut to this many encoded characters.
MAX_STATUS_MESSAGE_CHARS = 1024


def fit_message(message: str, limit: int = MAX_STATUS_MESSAGE_CHARS) -> str:
    """`message` cut (with "…") so that its percent-encoded form takes at most `limit` characters."""
    if len(message) * 12 <= limit or sum(map(_encoded_chars, message)) <= limit:
        return message
    size = 0
    for i, ch in enumerate(message):
        size += _encoded_chars(ch)
        if size > limit - 9:     # room for the "…": 3 bytes, 9 characters encoded
            return message[:i] + "…"
    return message


def _encoded_chars(ch: str) -> int:
    return 1 if " " <= ch <= "~" and ch != "%" else 3 * len(ch.encode("utf-8", "surrogatepass"))


def status_code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


# A downstream service's failure that says nothing the caller can act on (and may name internal
# addresses): passed on as UNAVAILABLE with a generic message; the details go to the log.
_OPAQUE_DOWNSTREAM = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                      grpc.StatusCode.DATA_LOSS}


def _bad_value(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.DataError)   # SQLSTATE class 22: data exception


# gRPC core ends the calls it has received but the server has not taken up yet with CANCELLED when the
# server stops (grpc/grpc#41785), though no caller cancelled them. So the stop waits, while the drain
# answers UNAVAILABLE (which clients retry on another instance), for a moment without a new call: at
# most DRAIN_QUIET_MAX_SECONDS (the Deployments' preStop pause and termination grace cover it).
DRAIN_QUIET_SECONDS = 0.2
DRAIN_QUIET_MAX_SECONDS = 2.0


class _Gate:
    """Open once the service's dependencies answered; closed again while draining."""

    def __init__(self) -> None:
        self.ready = False
        self.served = False       # was ready once: not ready again means a dependency went away
        self.draining = False
        self.last_call = 0.0      # time.monotonic() of the last call taken up

    async def quiet(self, quiet_seconds: float = DRAIN_QUIET_SECONDS,
                    max_seconds: float = DRAIN_QUIET_MAX_SECONDS) -> float:
        """Returns once no call came for `quiet_seconds`, or after `max_seconds`: the seconds waited."""
        start = time.monotonic()
        while True:
            now = time.monotonic()
            idle = now - self.last_call
            if idle >= quiet_seconds or now - start >= max_seconds:
                return now - start
            await asyncio.sleep(min(quiet_seconds - idle, max_seconds - (now - start)))


class _Undecodable:
    """A request whose bytes are not the method's message: INVALID_ARGUMENT, not grpc's own error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserialize):
    if deserialize is None:
        return None

    def decode(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or a RuntimeWarning-turned-error of upb
            return _Undecodable(f"{exc.__class__.__name__}: {exc}"[:200])

    return decode


def _check_decoded(request) -> None:
    if isinstance(request, _Undecodable):
        raise _Rejected("INVALID_ARGUMENT", f"the request is not a valid message of this method ({request.reason})")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Latency histograms, status counts, domain-error mapping and the readiness gate.

    The wrapped handler of each method is built once and kept, with its metric children: building
    it per call (closures, a new RpcMethodHandler, two label lookups) cost more than a cached
    Chat itself (bench scenario "chat")."""

    def __init__(self, service: str, gate: _Gate) -> None:
        self._service = service
        self._gate = gate
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # unknown methods are not kept: a client could send any name
            wrapped = self.wrapped(method, handler)
        return wrapped

    def wrapped(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` of `method` with the metrics, the error mapping and the gate, built once."""
        wrapped = self._handlers.get(method)
        if wrapped is None:
            wrapped = self._handlers[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        always_open = method.startswith(_ALWAYS_OPEN)
        short = method.rsplit("/", 1)[-1]
        decode = _tolerant(handler.request_deserializer)
        metrics = _MethodMetrics(self._service, short)
        @contextlib.asynccontextmanager
        async def served(request, context):
            """Admission, the request's check, the status of every outcome and its metrics, around a call."""
            start = time.perf_counter()
            code = "OK"
            try:
                self._admit(always_open)
                _check_decoded(request)
                yield
            except (asyncio.CancelledError, GeneratorExit):
                code = _ended_by_caller(context)
                raise
            except BaseException as exc:  # noqa: BLE001 - every outcome is counted
                code = await self._fail(exc, context, short)
            finally:
                metrics.observe(code, start, context)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                async with served(request, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, decode, handler.response_serializer)
        if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
            inner_stream = handler.unary_stream

            async def stream(request, context):
                async with served(request, context):
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(stream, decode, handler.response_serializer)
        if handler.unary_stream:
            # A stream written through context.write (grpcio's health servicer's Watch): its coroutine
            # is awaited, not iterated.
            inner_written = handler.unary_stream

            async def written(request, context):
                async with served(request, context):
                    await inner_written(request, context)

            return grpc.unary_stream_rpc_method_handler(written, decode, handler.response_serializer)
        return handler

    def _admit(self, always_open: bool) -> None:
        if not always_open and self._gate.draining:
            # Not a call taken up: counted as one, a client that keeps sending on its connection
            # (which it leaves only at the server's stop) held every drain to its longest pause.
            raise _Rejected("UNAVAILABLE", f"{self._service} is shutting down; retry on another instance")
        self._gate.last_call = time.monotonic()
        if always_open:
            return
        if not self._gate.ready:
            if self._gate.served:
                raise _Rejected("UNAVAILABLE", f"{self._service} cannot reach a dependency it needs right now; "
                                               "retry shortly")
            raise _Rejected("UNAVAILABLE", f"{self._service} is starting; its dependencies are not ready yet")

    async def _fail(self, exc: BaseException, context, method: str) -> str:
        # Cancelled, or (GeneratorExit) a stream closed because its client went away mid-write: no
        # status to send, nothing failed.
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if not isinstance(exc, (ParleyError, _Rejected, grpc.aio.AioRpcError, asyncio.TimeoutError, TimeoutError)):
            # A dependency restarting or unreachable (asyncpg, Redis, a socket) is UNAVAILABLE, never INTERNAL.
            mapped = as_unavailable(exc)
            if mapped is not None:
                logger.warning("%s: dependency unavailable: %r", method, exc)
                exc = mapped
        elif isinstance(exc, TimeoutError) and not _callers_deadline(context):
            # A bound of the service's own passed (a PostgreSQL statement's 30 s client timeout on a
            # server that takes connections but does not answer), not the caller's deadline, which
            # DEADLINE_EXCEEDED is kept for: a dependency too slow right now, another instance may answer.
            logger.warning("%s: a dependency did not answer in time: %r", method, exc)
            exc = Unavailable(f"{self._service} waited too long on a dependency; retry shortly",
                              trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)})
        if isinstance(exc, (ParleyError, _Rejected)):
            if exc.trailers:
                context.set_trailing_metadata(tuple(with_retry_hints(exc.trailers).items()))
            await context.abort(status_code(exc.code), fit_message(exc.message))
        if isinstance(exc, grpc.aio.AioRpcError):
            # A downstream service's answer: pass on its status and message, unless it is opaque.
            logger.warning("downstream call failed in %s: %s %s", method, exc.code().name, exc.details())
            theirs = dict(exc.trailing_metadata() or ())
            hints = {name: theirs[name] for name in (RETRY_AFTER_TRAILER, RETRY_AFTER_MS_TRAILER)
                     if isinstance(theirs.get(name), str)}
            if exc.code() in _OPAQUE_DOWNSTREAM:
                hints = with_retry_hints(hints or {RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)})
                context.set_trailing_metadata(tuple(hints.items()))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"a service {self._service} needs is unavailable; "
                                                                 "retry shortly")
            if hints:  # e.g. its rate limit: when to retry is passed on with the status
                context.set_trailing_metadata(tuple(with_retry_hints(hints).items()))
            await context.abort(exc.code(), fit_message(exc.details() or exc.code().name))
        if isinstance(exc, TimeoutError):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} timed out")
        incident = uuid.uuid4().hex[:12]
        if _bad_value(exc):
            # PostgreSQL refused a value of the request (a NUL character, a number out of range, ...).
            logger.warning("value refused by PostgreSQL in %s (incident %s): %r", method, incident, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"a value of the request cannot be stored or searched (incident {incident})")
        logger.exception("unhandled error in %s (incident %s)", method, incident)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        return "INTERNAL"  # not reached: abort raises


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A servicer's generic handler whose method handlers come out wrapped (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, interceptor: ServerInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor

    def service(self, handler_call_details):
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None  # not this handler's method (or unknown): not kept, a client could send any name
        return self._interceptor.wrapped(handler_call_details.method, handler)


class WrappingServer:
    """The server as the servicers' `add_*_to_server` see it: every method handler they register is
    wrapped by the interceptor's code at registration, so no interceptor runs per call. grpc.aio
    runs a server's interceptors as a coroutine per call (with the call's details and a
    continuation): on the echo, the bootstrap cost ~10 % more CPU per call than a bare server."""

    def __init__(self, server: grpc.aio.Server, interceptor: ServerInterceptor) -> None:
        self._server = server
        self._interceptor = interceptor

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self._interceptor) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._interceptor.wrapped(f"/{service}/{name}", h) for name, h in handlers.items()})

    def __getattr__(self, name: str):
        return getattr(self._server, name)


def _callers_deadline(context) -> bool:
    """Whether a timeout met now is the caller's: its deadline is (all but) reached."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= OWN_DEADLINE_SLACK_SECONDS


def _ended_by_caller(context) -> str:
    """The status of a call that its caller ended (no status is sent): past its deadline, or cancelled
    (also a stream whose client went away mid-write). Counted so, not as OK."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class _MethodMetrics:
    """One method's latency histogram and status counters, resolved once instead of per call."""

    def __init__(self, service: str, method: str) -> None:
        self._service = service
        self._method = method
        self._latency = RPC_LATENCY.labels(service, method)
        self._handled: dict[str, Any] = {}

    def observe(self, code: str, start: float, context) -> None:
        final = context.code()
        if final is not None:
            code = final.name if isinstance(final, grpc.StatusCode) else str(final)
        self._latency.observe(time.perf_counter() - start)
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = RPC_HANDLED.labels(self._service, self._method, code)
        counter.inc()


class _Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # A service starting or draining is worth retrying shortly (on another instance): say when.
        self.trailers: dict[str, str] = (
            {RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)} if code == "UNAVAILABLE" else {})


async def _connect(spec: ServiceSpec) -> None:
    """Run on_start until it succeeds, backing off; the server keeps answering health meanwhile."""
    if spec.on_start:
        await when_ready(spec.on_start, spec.name)


async def _probe(checks: dict[str, Check]) -> list[str]:
    failing = []
    for name, check in checks.items():
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can return a result and lose the
            # watcher's cancellation that came in the same iteration, and the stop then waits for good.
            # The timeout only cancels: a check must end when cancelled, not wait on a server that does
            # not answer (a pool connection's polite release does: db.ping terminates it instead).
            async with asyncio.timeout(3.0):
                await check()
        except Exception as exc:  # noqa: BLE001
            failing.append(f"{name}: {exc!r}")
    return failing


async def _report_soft(spec: ServiceSpec, health: HealthServicer, known: dict[str, bool]) -> None:
    """Health details of the soft dependencies: `dependency/<name>` SERVING or NOT_SERVING."""
    for name, check in spec.soft_checks.items():
        up = not await _probe({name: check})
        DEPENDENCY_UP.labels(spec.name, name).set(1 if up else 0)
        if known.get(name) != up:
            if known or not up:
                log = logger.info if up else logger.warning
                log("%s: soft dependency %s is %s (readiness unchanged)", spec.name, name, "up" if up else "down")
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            await health.set(f"dependency/{name}", status)
            known[name] = up


async def serve(spec: ServiceSpec, stop: asyncio.Event | None = None) -> None:
    """Start the server, wait for dependencies, serve until SIGTERM/SIGINT (or `stop`), then drain."""
    gate = _Gate()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", spec.max_message_bytes),
            ("grpc.max_send_message_length", spec.max_message_bytes),
            ("grpc.so_reuseport", 0),
            *spec.transport.options(),
        ],
        maximum_concurrent_rpcs=spec.transport.max_concurrent_rpcs,
    )
    wrapping = WrappingServer(server, ServerInterceptor(spec.name, gate))
    spec.register(wrapping)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, wrapping)
    enable_reflection(wrapping, [*spec.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    for name in ("", *spec.service_names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Liveness ("is the process able to answer at all") is separate from readiness (the service and
    # its dependencies): a database outage must take pods out of rotation, not restart them.
    await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(spec.bind)
    if port == 0:
        raise SystemExit(f"{spec.name}: cannot listen on {spec.bind}")
    serve_metrics(spec.metrics_port)
    await server.start()
    logger.info("%s listening on %s (metrics on :%s)", spec.name, spec.bind, spec.metrics_port)

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def signalled() -> None:
            if stop.is_set():
                # A second signal: an operator who will not wait for the drain.
                logger.warning("%s: stopping at once (a second signal during the drain)", spec.name)
                os._exit(1)
            stop.set()
            # Whatever the drain waits for, the process ends when its stages' bounds have passed.
            exit_after(DRAIN_QUIET_MAX_SECONDS + spec.grace_seconds + spec.stop_seconds + 1, spec.name)

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, signalled)

    async def watch_health() -> None:
        await _connect(spec)
        serving = None
        soft: dict[str, bool] = {}
        while True:
            await _report_soft(spec, health, soft)
            failing = await _probe(spec.checks)
            now_serving = not failing
            if now_serving != serving:
                status = health_pb2.HealthCheckResponse.SERVING if now_serving else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in ("", *spec.service_names):
                    await health.set(name, status)
                gate.ready = now_serving
                gate.served |= now_serving
                if now_serving:
                    logger.info("%s is SERVING", spec.name)
                else:
                    logger.warning("%s is NOT_SERVING: %s", spec.name, "; ".join(failing))
                serving = now_serving
            # While not serving, look again soon: calls are refused until the next probe succeeds.
            await asyncio.sleep(spec.check_interval_seconds if serving else min(0.5, spec.check_interval_seconds))

    watcher = asyncio.create_task(watch_health())
    await stop.wait()
    logger.info("%s draining in-flight RPCs (up to %.0fs)", spec.name, spec.grace_seconds)
    gate.draining = True
    spec.draining.set()
    await health.enter_graceful_shutdown()
    watcher.cancel()
    try:
        await watcher
    except asyncio.CancelledError:
        pass
    except Exception:   # a failed watcher must not keep the server from stopping and draining
        logger.exception("%s: the health watcher had failed", spec.name)
    waited = await gate.quiet()
    logger.info("%s stopping (%.2fs spent waiting for a pause in new calls)", spec.name, waited)
    await server.stop(spec.grace_seconds)
    if spec.on_stop:
        try:
            async with asyncio.timeout(spec.stop_seconds):
                await spec.on_stop()
        except TimeoutError:
            logger.error("%s: closing its clients took more than %.0f s; stopping without them", spec.name,
                         spec.stop_seconds)
    logger.info("%s stopped", spec.name)


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def bind_address(host: str, addr: str) -> str:
    return f"{host}:{port_of(addr)}"


def channel(addr: str, max_message_bytes: int = 4 * 1024 * 1024, *,
            retry: Sequence[tuple[str, str]] = ()) -> grpc.aio.Channel:
    """A client channel with the same message limits as the servers. `retry`: (service, method) pairs
    safe to call again (reads), which gRPC retries on UNAVAILABLE: a replica that drains refuses calls
    until its stop closes the connection, and the retry goes to the connection made next."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
    ]
    if retry:
        options.append(("grpc.service_config", json.dumps({
            "methodConfig": [{
                "name": [{"service": service, "method": method} for service, method in retry],
                "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "0.5s",
                                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
            }],
            # Retries stop while most calls fail (a dependency away for all replicas), and come
            # back as calls succeed again: no storm of retries against a service that is down.
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        })))
    return grpc.aio.insecure_channel(addr, options=options)


async def check_serving(target: grpc.aio.Channel, name: str, timeout: float = 2.0) -> None:
    """Readiness of a downstream service: its health service says SERVING."""
    reply = await health_pb2_grpc.HealthStub(target).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"{name} is not serving")
