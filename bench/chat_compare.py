"""The response service of a git revision against the working tree's, side by side in one run: cached
`Chat` driven by ghz (a separate process) on each in turn, and on the bare grpc.aio echo, at each
concurrency, `rounds` times. Per target: req/s, the ratio to the echo of the same round, the server's
CPU per call, and the CPU per call of everything the call makes work on this stack (the server, ghz,
Kafka, Redis, PostgreSQL, the stream worker), which is what a 2-core machine divides among them.

    python -m bench.chat_compare --base <revision> [--rounds 3] [--seconds 5] [--concurrency 16 64]

The revision's tree is exported with `git archive` and its response service started from there, a
process beside the working tree's; both share the stack, the key and the warm answer cache."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from rich.table import Table

from bench.harness import QUESTIONS, console, cpu_seconds, free_port, pid_listening_on, save_results, started_services
from bench.load import run_ghz
from bench.scenario_chat import CALL, _echo_ready, _serving, _stop
from bench.stream_compare import export
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc
from services.launcher import REPO


def _stack_pids() -> set[int]:
    """This stack's processes: the services, the worker and the bench's servers (children of this
    process), Kafka, Redis and PostgreSQL (found by their ports, with PostgreSQL's backends)."""
    roots = {os.getpid()}
    for name in ("PARLEY_LOCAL_KAFKA_PORT", "PARLEY_LOCAL_REDIS_PORT", "PARLEY_LOCAL_PG_PORT"):
        if os.environ.get(name):
            out = subprocess.run(["ss", "-ltnpH", f"sport = :{os.environ[name]}"], capture_output=True, text=True).stdout
            roots.update(int(p) for p in re.findall(r"pid=(\d+)", out))
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def _stack_cpu(pids: set[int]) -> float:
    """CPU seconds of `pids` so far, with the children this process has waited for (ghz)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue  # a process that ended
    times = os.times()
    return total + times.children_user + times.children_system - cpu_seconds(os.getpid())


async def run(base: str, rounds: int, seconds: float, concurrencies: list[int]) -> dict:
    tree = export(base)
    samples: dict[tuple[int, str], list[dict]] = {}
    with ExitStack() as stack:
        async with started_services() as (settings, _key_id, secret):
            addrs = {"echo": f"127.0.0.1:{free_port()}", "base": f"127.0.0.1:{free_port()}",
                     "new": settings.response_addr}
            echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", addrs["echo"].rsplit(":", 1)[1]],
                                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(_stop, echo)
            old = subprocess.Popen([sys.executable, "-m", "services.response"], cwd=tree,
                                   env={**os.environ, "PYTHONPATH": str(tree), "PARLEY_RESPONSE_ADDR": addrs["base"],
                                        "PARLEY_RESPONSE_METRICS_PORT": str(free_port())},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(_stop, old)
            await _echo_ready(addrs["echo"])
            await _serving(addrs["base"])
            pids = {name: pid_listening_on(addr) for name, addr in addrs.items()}
            requests = [{"product_key": secret, "session_id": "bench-{{.WorkerID}}", "message": q} for q in QUESTIONS]
            for name in ("base", "new"):  # the answer cache is warm for both
                async with channel(addrs[name]) as ch:
                    stub = response_pb2_grpc.ResponseServiceStub(ch)
                    for q in QUESTIONS:
                        await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=q), timeout=30)
            for round_no in range(1, rounds + 1):
                for c in concurrencies:
                    console.print(f"  round {round_no}/{rounds}, concurrency {c}: echo, {base}, working tree ...")
                    # The first and the second of a round alternate, so neither always follows the echo.
                    order = ["echo", "base", "new"] if round_no % 2 else ["echo", "new", "base"]
                    for name in order:
                        own = _stack_pids()
                        before = _stack_cpu(own)
                        result = await run_ghz(name, addrs[name], CALL, requests, c, seconds, server_pid=pids[name])
                        stack_us = (_stack_cpu(own) - before) / result.calls * 1e6 if result.calls else 0.0
                        samples.setdefault((c, name), []).append({**result.as_dict(), "stack_cpu_us": stack_us})
    return _report(base, samples, concurrencies, rounds, seconds)


def _report(base: str, samples: dict, concurrencies: list[int], rounds: int, seconds: float) -> dict:
    table = Table("conc.", "target", "req/s", "/ echo", "server CPU µs/call", "stack CPU µs/call", "errors",
                  title=f"Cached Chat: {base} against the working tree, medians of {rounds} rounds (ghz, {seconds:g}s each)")
    levels = []
    for c in concurrencies:
        echo = samples[(c, "echo")]
        row = {"concurrency": c}
        for name in ("echo", "base", "new"):
            runs = samples[(c, name)]
            ratio = statistics.median(r["throughput"] / e["throughput"] for r, e in zip(runs, echo, strict=True)
                                      if e["throughput"])
            row[name] = {"req_per_s": statistics.median(r["throughput"] for r in runs), "over_echo": ratio,
                         "server_cpu_us": statistics.median(r["server_cpu_us"] for r in runs),
                         "stack_cpu_us": statistics.median(r["stack_cpu_us"] for r in runs),
                         "errors": sum(r["errors"] for r in runs), "rounds": runs}
            table.add_row(str(c), base if name == "base" else name, f"{row[name]['req_per_s']:.0f}", f"{ratio:.3f}",
                          f"{row[name]['server_cpu_us']:.0f}", f"{row[name]['stack_cpu_us']:.0f}",
                          str(row[name]["errors"]))
        levels.append(row)
    console.print(table)
    return {"scenario": "chat_compare", "base": base, "rounds": rounds, "seconds": seconds, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision whose response service is compared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    report = asyncio.run(run(args.base, args.rounds, args.seconds, args.concurrency))
    save_results(report, "chat-compare")


if __name__ == "__main__":
    main()
