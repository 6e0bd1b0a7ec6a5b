"""Server reflection under both protocol versions (v1, v1alpha), resolving every symbol a client asks for.

grpcio-reflection serves only `grpc.reflection.v1alpha.ServerReflection`, and answers
`file_containing_symbol` from the descriptor pool, which does not know method symbols
(`parley.v1.ResponseService.Chat`) nor package-scoped enum values. Current clients (grpcurl, ghz)
ask v1 first and look methods up by symbol, so they failed with "Symbol not found". Here one
servicer answers both versions — their messages are the same schema, so the v1alpha classes read
and write v1 bytes unchanged — and falls back on an index of the served files' symbols.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from services.common.pb.grpc.reflection.v1 import reflection_pb2 as v1_pb2

V1_SERVICE = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1ALPHA_SERVICE = v1alpha.SERVICE_NAME
_METHOD = "ServerReflectionInfo"


def _enum_symbols(enum: EnumDescriptor, scope: str) -> Iterable[str]:
    yield enum.full_name
    # Enum values are siblings of their enum (C++ scoping): `parley.v1.STRATEGY_FAQ`.
    yield from (f"{scope}.{value.name}" if scope else value.name for value in enum.values)


def _message_symbols(message: Descriptor) -> Iterable[str]:
    yield message.full_name
    yield from (field.full_name for field in message.fields)
    yield from (ext.full_name for ext in message.extensions)
    for enum in message.enum_types:
        yield from _enum_symbols(enum, message.full_name)
    for nested in message.nested_types:
        yield from _message_symbols(nested)


def file_symbols(file: FileDescriptor) -> Iterable[str]:
    """Every fully-qualified symbol a file defines, methods and enum values included."""
    for service in file.services_by_name.values():
        yield service.full_name
        yield from (method.full_name for method in service.methods)
    for message in file.message_types_by_name.values():
        yield from _message_symbols(message)
    for enum in file.enum_types_by_name.values():
        yield from _enum_symbols(enum, file.package)
    yield from (ext.full_name for ext in file.extensions_by_name.values())


def _with_dependencies(files: Iterable[FileDescriptor]) -> dict[str, FileDescriptor]:
    seen: dict[str, FileDescriptor] = {}
    todo = list(files)
    while todo:
        file = todo.pop()
        if file.name not in seen:
            seen[file.name] = file
            todo.extend(file.dependencies)
    return seen


def _known(pool: descriptor_pool.DescriptorPool, service: str) -> bool:
    """A service registered by hand (generic handlers, tests) has no descriptor: listed, not described."""
    try:
        pool.FindServiceByName(service)
    except KeyError:
        return False
    return True


class ReflectionServicer(v1alpha.aio.ReflectionServicer):
    """grpcio-reflection's servicer, plus the symbols its descriptor pool lookup misses."""

    def __init__(self, service_names: Sequence[str], pool: descriptor_pool.DescriptorPool | None = None) -> None:
        super().__init__(service_names, pool=pool)
        pool = pool or descriptor_pool.Default()
        files = _with_dependencies(pool.FindServiceByName(name).file for name in service_names
                                   if _known(pool, name))
        self._files_by_symbol = {symbol: file.name for file in files.values() for symbol in file_symbols(file)}

    def _file_containing_symbol(self, request, fully_qualified_name):
        filename = self._files_by_symbol.get(fully_qualified_name)
        if filename is not None:
            return self._file_by_filename(request, filename)
        return super()._file_containing_symbol(request, fully_qualified_name)


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection for `service_names` (and for reflection itself) under v1 and v1alpha."""
    servicer = ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE])
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(name, {_METHOD: handler}) for name in (V1_SERVICE, V1ALPHA_SERVICE))
    )
