"""Scenario "fuzz": every RPC of the four services with hypothesis-generated and byte-mutated messages
(bench/fuzz.py), longer than the bounded run of `make test`. Prints calls and statuses per RPC, the
findings (INTERNAL or UNKNOWN) and whether every service is still SERVING.

`make bench ARGS="--only fuzz"`; `--seconds` scales the count (50 generated + 50 mutated messages per
RPC and measured second of the default 5)."""

from __future__ import annotations

import time

from rich.table import Table

from bench.fuzz import SERVICES, Credentials, fuzz_all
from bench.harness import console, started_services
from services.cli import create_key

NAME = "fuzz"


async def run(seconds: float, concurrencies: list[int]) -> dict:
    per_rpc = max(10, int(10 * seconds))
    async with started_services() as (settings, key_id, secret):
        # A key of its own with a website, so Fetch gets past its host check; the demo key stays intact.
        key = await create_key(settings, "Fuzz", f"fuzz-{int(time.time())}", website="http://127.0.0.1:9/")
        creds = Credentials(key.key.id, key.product_key, settings.admin_token)
        addresses = {"search": settings.search_addr, "response": settings.response_addr,
                     "scraper": settings.scraper_addr, "analytics": settings.analytics_addr}
        console.print(f"  {per_rpc} generated + {per_rpc} mutated messages per RPC ...")
        start = time.perf_counter()
        report = await fuzz_all(addresses, creds, per_rpc=per_rpc, mutations=per_rpc, seed=int(time.time()))
        elapsed = time.perf_counter() - start
    table = Table("RPC", "calls", "statuses", title=f"fuzz: {report.calls()} calls in {elapsed:.0f}s")
    for service in SERVICES.values():
        for m in service.methods:
            counts = report.statuses[f"{service.name}.{m.name}"]
            table.add_row(f"{service.name}.{m.name}", str(sum(counts.values())),
                          ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    console.print(table)
    console.print(f"findings (INTERNAL/UNKNOWN): {len(report.findings)}")
    for line in report.findings[:30]:
        console.print("  " + line)
    console.print(f"health afterwards: {report.serving}")
    return {"scenario": NAME, "calls": report.calls(), "seconds": elapsed, "findings": report.findings,
            "serving": report.serving, "statuses": {k: dict(v) for k, v in report.statuses.items()}}
