"""Fuzzing every RPC of the four services: messages built by hypothesis from the protobuf descriptors
(with the run's real credentials mixed in, so calls get past authentication), and byte-level mutations
of valid serialized messages sent through a raw generic call. Any INTERNAL or UNKNOWN status is a
finding; afterwards every service must still answer SERVING.

Used by `tests/e2e/test_fuzz.py` (a few hundred calls) and `make bench ARGS="--only fuzz"` (longer)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis import seed as hypothesis_seed

from services.common.pb.parley.v1 import analytics_pb2, response_pb2, scraper_pb2, search_pb2

SERVICES = {
    "search": search_pb2.DESCRIPTOR.services_by_name["SearchService"],
    "response": response_pb2.DESCRIPTOR.services_by_name["ResponseService"],
    "scraper": scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"],
    "analytics": analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
}
FAILURES = {"INTERNAL", "UNKNOWN"}
# RPCs that would change what the run's own key is (its secret, its existence) are sent without the
# real id, so one early call does not turn every later one into UNAUTHENTICATED.
_KEEP_KEY = {"RevokeProductKey", "RotateProductKey"}

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


@dataclass
class Credentials:
    key_id: str
    secret: str
    admin_token: str
    url: str = "http://127.0.0.1:9/"     # a URL the key may fetch (nothing listens there)


def _text() -> st.SearchStrategy[str]:
    chars = st.characters(blacklist_categories=("Cs",))   # protobuf strings must be valid UTF-8
    return st.one_of(
        st.text(chars, max_size=40),
        st.sampled_from(["", " ", "\x00", "hello", "How do I reset my password?", "a" * 5000, "../../etc/passwd",
                         "http://10.0.0.1/", "http://[2002:a00:1::1]/", "' OR 1=1 --", "%s%n", "\u202e\ufeff"]),
    )


def _scalar(f: d.FieldDescriptor, creds: Credentials, rpc: str) -> st.SearchStrategy:
    if f.type == d.FieldDescriptor.TYPE_STRING:
        real = {"product_key": [creds.secret], "product_key_id": [] if rpc in _KEEP_KEY else [creds.key_id],
                "url": [creds.url], "id": [] if rpc in _KEEP_KEY else [creds.key_id]}.get(f.name, [])
        return st.one_of(_text(), st.sampled_from(real)) if real else _text()
    if f.type == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if f.type == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if f.type == d.FieldDescriptor.TYPE_DOUBLE else 32)
    if f.type == d.FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in f.enum_type.values]), st.integers(-3, 1000))
    low, high = _INT_RANGES[f.type]
    return st.one_of(st.integers(low, high), st.integers(-2, 120).filter(lambda v: low <= v <= high))


def message_strategy(desc: d.Descriptor, creds: Credentials, rpc: str, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of a descriptor: every field optional, nested messages to depth 2, maps and lists short."""
    cls = GetMessageClass(desc)
    fields: dict[str, st.SearchStrategy] = {}
    for f in desc.fields:
        if f.type == d.FieldDescriptor.TYPE_MESSAGE:
            if depth >= 2:
                continue
            if f.message_type.GetOptions().map_entry:
                k, v = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                fields[f.name] = st.dictionaries(_scalar(k, creds, rpc), _scalar(v, creds, rpc), max_size=3)
                continue
            inner = message_strategy(f.message_type, creds, rpc, depth + 1)
        else:
            inner = _scalar(f, creds, rpc)
        fields[f.name] = st.lists(inner, max_size=3) if f.is_repeated else inner
    optional = {name: st.one_of(st.none(), s) for name, s in fields.items()}
    return st.fixed_dictionaries(optional).map(lambda values: cls(**{k: v for k, v in values.items() if v is not None}))


def generate(desc: d.Descriptor, creds: Credentials, rpc: str, count: int, seed: int) -> list[Message]:
    """`count` messages from hypothesis's search of the message space (deterministic per seed)."""
    out: list[Message] = []

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message_strategy(desc, creds, rpc))
    def collect(message: Message) -> None:
        out.append(message)

    collect()
    return out[:count]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One byte-level mutation of a serialized message."""
    b = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0 and b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    elif kind == 2 and b:
        del b[rng.randrange(len(b))]
    elif kind == 3:
        b = b[: rng.randrange(len(b) + 1)]
    elif kind == 4:
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == 5:
        # A field with an absurd length prefix, or an unknown wire type.
        b += rng.choice([b"\x0a\xff\xff\xff\xff\x0f", b"\x0f", b"\x0b\x0c", b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"])
    else:
        b = bytearray(rng.randbytes(rng.randrange(1, 48)))
    return bytes(b)


@dataclass
class FuzzReport:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    findings: list[str] = field(default_factory=list)
    serving: dict[str, str] = field(default_factory=dict)

    def calls(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())


async def _send(ch: grpc.aio.Channel, path: str, streaming: bool, payload: bytes, metadata) -> str:
    try:
        if not streaming:
            await ch.unary_unary(path)(payload, metadata=metadata, timeout=10)
            return "OK"
        call = ch.unary_stream(path)(payload, metadata=metadata, timeout=10)
        try:
            for _ in range(2):   # StreamMetrics never ends on its own: two updates are enough
                if await call.read() == grpc.aio.EOF:
                    break
        finally:
            call.cancel()
        code = await call.code()
        return "OK" if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) else code.name
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def fuzz_service(ch: grpc.aio.Channel, service: d.ServiceDescriptor, creds: Credentials, report: FuzzReport,
                       per_rpc: int, mutations: int, seed: int, concurrency: int = 4) -> None:
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    admin = (("x-parley-admin-token", creds.admin_token),)

    async def one(method: d.MethodDescriptor, payload: bytes, kind: str) -> None:
        path = f"/{service.full_name}/{method.name}"
        metadata = rng.choice([(), admin, (("x-parley-admin-token", "guess"),)])
        async with sem:
            status = await _send(ch, path, method.server_streaming, payload, metadata)
        report.statuses[f"{service.name}.{method.name}"][status] += 1
        if status in FAILURES:
            report.findings.append(f"{service.name}.{method.name} ({kind}): {status} for {payload[:80]!r}")

    tasks = []
    for i, method in enumerate(service.methods):
        messages = generate(method.input_type, creds, method.name, per_rpc, seed + i)
        valid = [m.SerializeToString() for m in messages] or [b""]
        tasks += [one(method, data, "generated") for data in valid]
        tasks += [one(method, mutate(rng.choice(valid), rng), "mutated") for _ in range(mutations)]
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)


async def still_serving(addresses: dict[str, str], report: FuzzReport) -> None:
    for name, addr in addresses.items():
        async with grpc.aio.insecure_channel(addr) as ch:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                report.serving[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                report.serving[name] = exc.code().name


async def fuzz_all(addresses: dict[str, str], creds: Credentials, *, per_rpc: int, mutations: int,
                   seed: int = 1) -> FuzzReport:
    """Every RPC of the four services (addresses by service name); statuses per RPC and findings."""
    report = FuzzReport()
    for n, (name, service) in enumerate(SERVICES.items()):
        async with grpc.aio.insecure_channel(addresses[name]) as ch:
            await fuzz_service(ch, service, creds, report, per_rpc, mutations, seed + 100 * n)
    await still_serving(addresses, report)
    return report
