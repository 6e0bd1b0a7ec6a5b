"""Scenario "faults" (`make chaos`): steady chat load while, one at a time, Redis is killed for 15 s,
the broker for 60 s, PostgreSQL restarts, the stream worker is SIGKILLed and a response replica
is SIGTERMed while a second one serves. Prints one row per fault."""

from __future__ import annotations

from rich.table import Table

from bench.faults import FULL, FaultResult, run_faults
from bench.harness import console

NAME = "faults"
RATE = 15.0  # chats per second, steady


def table(results: list[FaultResult], title: str) -> Table:
    t = Table("fault", "chats sent", "answered % (during)", "cached answered %", "errors by status",
              "turns acked", "stored", "lost", "counted twice", "recovered after s", title=title)
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "-"
        t.add_row(r.name, str(r.sent), f"{r.answered_pct:.1f}", f"{r.hits_answered_pct:.1f}", errors,
                  str(r.acknowledged), str(r.stored), str(r.lost), str(r.counted_twice), f"{r.recover_seconds:.1f}")
    return t


async def run(seconds: float, concurrencies: list[int]) -> dict:
    # `seconds`: steady load before and after each fault.
    results = await run_faults(FULL, rate=RATE, before=max(5.0, seconds), after=max(10.0, seconds),
                               settle_seconds=180)
    console.print(table(results, f"Faults under {RATE:.0f} chats/s (two response replicas)"))
    return {"scenario": NAME, "rate": RATE, "faults": [r.as_dict() for r in results]}
