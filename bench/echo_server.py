"""A bare grpc.aio echo server (raw bytes, no interceptors): this machine's gRPC ceiling."""

from __future__ import annotations

import asyncio
import sys

import grpc

METHOD = "/parley.bench.Echo/Echo"


async def _echo(request: bytes, context) -> bytes:
    return request


async def main(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(
            "parley.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
        ),
    ))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
