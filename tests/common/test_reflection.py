"""Server reflection of the shared bootstrap, as real clients use it: grpcurl and ghz without a
.proto (v1), grpcio-reflection's own messages (v1alpha), method and enum-value symbols."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from services.common.grpc_server import ServiceSpec, serve
from services.common.pb.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.launcher import REPO

BIN = REPO / ".local" / "bin"
RESPONSE_SERVICE = "parley.v1.ResponseService"


class _Answers(response_pb2_grpc.ResponseServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Chat(self, request: response_pb2.ChatRequest, context) -> response_pb2.ChatResponse:
        self.calls += 1
        return response_pb2.ChatResponse(answer=f"you said: {request.message}", request_id=f"r{self.calls}")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[tuple[str, _Answers]]:
    answers = _Answers()
    addr = f"127.0.0.1:{_port()}"
    stop = asyncio.Event()
    spec = ServiceSpec(name="reflected", service_names=[RESPONSE_SERVICE], bind=addr, check_interval_seconds=0.05,
                       register=lambda server: response_pb2_grpc.add_ResponseServiceServicer_to_server(answers, server))
    task = asyncio.create_task(serve(spec, stop))
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = response_pb2_grpc.ResponseServiceStub(ch)
        for _ in range(100):  # until the readiness gate opens
            try:
                await stub.Chat(response_pb2.ChatRequest(message="ready?"), timeout=2)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
    yield addr, answers
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def _run(tool: str, *args: str) -> str:
    path = BIN / tool
    assert path.exists(), f"{path} is missing: build it with `make grpc-tools` (make test does)"
    proc = await asyncio.create_subprocess_exec(str(path), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"{tool} {' '.join(args)} failed ({proc.returncode}): {err.decode()}{out.decode()}"
    return out.decode()


async def _ask(addr: str, service: str, pb, **request) -> object:
    """One reflection request on `service`, with that version's own generated messages."""
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.stream_stream(f"/{service}/ServerReflectionInfo",
                                request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                response_deserializer=pb.ServerReflectionResponse.FromString)
        stream = call(iter([pb.ServerReflectionRequest(**request)]), timeout=10)
        replies = [reply async for reply in stream]
    assert len(replies) == 1
    return replies[0]


def _files(reply) -> list[str]:
    assert reply.WhichOneof("message_response") == "file_descriptor_response", reply
    return [descriptor_pb2.FileDescriptorProto.FromString(raw).name
            for raw in reply.file_descriptor_response.file_descriptor_proto]


@pytest.mark.parametrize("service, pb", [("grpc.reflection.v1.ServerReflection", v1_pb2),
                                         ("grpc.reflection.v1alpha.ServerReflection", v1alpha_pb2)],
                         ids=["v1", "v1alpha"])
@pytest.mark.parametrize("symbol", [
    "parley.v1.ResponseService.Chat",       # a method: the pool alone does not know it
    "parley.v1.STRATEGY_FAQ",               # an enum value, scoped beside its enum
    "parley.v1.ChatRequest.product_key",    # a field
    "parley.v1.ResponseService",
])
async def test_symbols_resolve_under_both_versions(served, service, pb, symbol):
    addr, _ = served
    files = _files(await _ask(addr, service, pb, file_containing_symbol=symbol))
    expected = "parley/v1/common.proto" if symbol == "parley.v1.STRATEGY_FAQ" else "parley/v1/response.proto"
    assert files[0] == expected
    assert "parley/v1/common.proto" in files  # with its dependencies, so the client can build the types


async def test_unknown_symbol_is_not_found(served):
    addr, _ = served
    reply = await _ask(addr, "grpc.reflection.v1.ServerReflection", v1_pb2,
                       file_containing_symbol="parley.v1.ResponseService.NoSuchMethod")
    assert reply.WhichOneof("message_response") == "error_response"
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_grpcurl_lists_describes_and_calls(served):
    addr, _ = served
    listed = (await _run("grpcurl", "-plaintext", addr, "list")).split()
    assert sorted(listed) == sorted([RESPONSE_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                     "grpc.reflection.v1alpha.ServerReflection"])
    described = await _run("grpcurl", "-plaintext", addr, "describe", "parley.v1.ResponseService.Chat")
    assert "rpc Chat ( .parley.v1.ChatRequest ) returns ( .parley.v1.ChatResponse );" in described
    reply = json.loads(await _run("grpcurl", "-plaintext", "-d", '{"message": "hello"}', addr,
                                  "parley.v1.ResponseService/Chat"))
    assert reply["answer"] == "you said: hello"


async def test_ghz_calls_a_method_found_by_reflection(served):
    addr, answers = served
    before = answers.calls
    report = json.loads(await _run("ghz", "--insecure", "--call", "parley.v1.ResponseService.Chat",
                                   "-d", '{"message": "load"}', "-n", "20", "-c", "4", "--format", "json", addr))
    assert report["count"] == 20
    assert report["statusCodeDistribution"] == {"OK": 20}
    assert answers.calls - before == 20
