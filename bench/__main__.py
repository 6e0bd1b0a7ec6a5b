"""`make bench`: runs the scenarios (bench/scenario_*.py) against the real stack; prints and writes results.

Each scenario module has NAME and `async def run(seconds, concurrencies) -> dict`.
`make bench ARGS="--only chat --seconds 10"` runs a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import pkgutil
import time

from bench.harness import console, save_results
from services.launcher import REPO



def scenarios() -> dict:
    found = {}
    for info in sorted(pkgutil.iter_modules([str(REPO / "bench")]), key=lambda m: m.name):
        if info.name.startswith("scenario_"):
            module = importlib.import_module(f"bench.{info.name}")
            found[module.NAME] = module
    return found


def main(argv: list[str] | None = None) -> None:
    available = scenarios()
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load level")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ", ".join(available))
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    chosen = [s for s in (args.only.split(",") if args.only else available) if s]
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {unknown}; available: {list(available)}")
    report = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": {"cpus": os.cpu_count()},
              "scenarios": []}
    for i, name in enumerate(chosen, 1):
        console.rule(f"[{i}/{len(chosen)}] scenario {name}")
        report["scenarios"].append(asyncio.run(available[name].run(args.seconds, concurrencies)))
    save_results(report, "bench")


if __name__ == "__main__":
    main()
