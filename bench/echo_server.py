"""The chat bench's ceiling: `parley.v1.ResponseService.Chat` answered at once with the question.

A separate process, on the services' event loop, found by the same reflection and called by
the same ghz command as the real service, so the two differ only by what Chat does.
`--mode bare` is a plain grpc.aio server (no interceptors); `--mode bootstrap` serves through
the services' own bootstrap (interceptor, readiness gate, health), to show what it costs.

usage: python -m bench.echo_server PORT [--mode bare|bootstrap] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import uvloop

from services.common.grpc_server import ServiceSpec, serve
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.common.reflection import enable_reflection

SERVICE = response_pb2.DESCRIPTOR.services_by_name["ResponseService"].full_name
METHOD = f"/{SERVICE}/Chat"  # for in-process callers: serialised ChatRequest in, ChatResponse out


class Echo(response_pb2_grpc.ResponseServiceServicer):
    async def Chat(self, request: response_pb2.ChatRequest, context) -> response_pb2.ChatResponse:
        return response_pb2.ChatResponse(answer=request.message, request_id=request.session_id)


def _register(server: grpc.aio.Server) -> None:
    response_pb2_grpc.add_ResponseServiceServicer_to_server(Echo(), server)


async def bare(port: int) -> None:
    server = grpc.aio.server()
    _register(server)
    enable_reflection(server, [SERVICE])  # ghz looks the method up; not on the per-call path
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def bootstrap(port: int) -> None:
    await serve(ServiceSpec(name="echo", service_names=[SERVICE], register=_register, bind=f"127.0.0.1:{port}",
                            check_interval_seconds=0.05, grace_seconds=1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.echo_server")
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("bare", "bootstrap"), default="bare")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    factory = uvloop.new_event_loop if args.loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run((bare if args.mode == "bare" else bootstrap)(args.port))


if __name__ == "__main__":
    main()
