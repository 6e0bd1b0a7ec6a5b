"""A bounded fuzz run of every RPC of the four services (bench/fuzz.py): generated and byte-mutated
messages, with and without credentials. No INTERNAL or UNKNOWN; every service SERVING afterwards.
The longer run: `make bench ARGS="--only fuzz"`."""

from __future__ import annotations

from bench.fuzz import SERVICES, Credentials, fuzz_all
from services.common.pb.parley.v1 import search_pb2
from tests.conftest import RUN_ID


async def test_fuzzed_messages_never_get_internal_or_unknown(services, settings, search, admin):
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name="Fuzz", id=f"t-{RUN_ID}-fuzz", website="http://127.0.0.1:9/",
        settings=search_pb2.KeySettings(rate_limit_per_second=1000, rate_limit_burst=1000)), metadata=admin, timeout=10)
    addresses = {"search": settings.search_addr, "response": settings.response_addr,
                 "scraper": settings.scraper_addr, "analytics": settings.analytics_addr}
    creds = Credentials(reply.key.id, reply.product_key, settings.admin_token)
    report = await fuzz_all(addresses, creds, per_rpc=10, mutations=8, seed=12)
    assert report.findings == [], "\n".join(report.findings[:20])
    assert report.serving == {name: "SERVING" for name in addresses}
    rpcs = {f"{s.name}.{m.name}" for s in SERVICES.values() for m in s.methods}
    assert set(report.statuses) == rpcs
    assert report.calls() >= 300
    # The credentials mixed in get calls past authentication and validation on every service.
    refusals = {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"}
    for name, service in SERVICES.items():
        seen = {code for m in service.methods for code in report.statuses[f"{service.name}.{m.name}"]}
        assert seen - refusals, (name, seen)
    assert sum(report.statuses[f"{s.name}.{m.name}"]["OK"] for s in SERVICES.values() for m in s.methods) >= 5
