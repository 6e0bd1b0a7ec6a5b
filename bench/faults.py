"""The fault suite: steady chat load (bench.fault_load, its own process) while one dependency at a
time fails, then what was answered and what reached PostgreSQL.

Faults use the local stack's own start and stop code (deploy.local) and the launcher's pid files,
so only this checkout's processes are touched. Each fault has its own product key, so its turns
are counted apart: acknowledged (answered) request ids against the `conversations` rows the
stream worker stored, and the per-minute metrics against those rows (counted twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.harness import QUESTIONS, bench_env, console, free_port
from deploy.local import stack
from deploy.local.config import progress_console
from deploy.local.postgres import kill_postgres, pg_layout, stop_postgres
from services.cli import DEMO_DIR, add_knowledge_path
from services.common import db
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import response_pb2, response_pb2_grpc, search_pb2, search_pb2_grpc
from services.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import REPO, Launcher


@dataclass
class Fault:
    name: str
    outage_seconds: float = 0.0


MIN_WINDOW = 5.0
UP_TIMEOUT = 300.0  # a broker restarting on a loaded machine took up to 61 s; give it room

FULL = [Fault("redis", 15), Fault("redis-frozen", 15), Fault("kafka", 60), Fault("kafka-frozen", 30), Fault("postgres"),
        Fault("postgres-killed", 5), Fault("postgres-frozen", 40), Fault("worker"), Fault("response"),
        Fault("response-killed")]


@dataclass
class FaultResult:
    name: str
    sent: int = 0
    answered_pct: float = 0.0           # of the chats started during the fault
    hits_answered_pct: float = 0.0      # the same, cached questions only
    errors: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    counted_twice: int = 0
    recover_seconds: float = 0.0
    unavailable_without_hint: int = 0   # UNAVAILABLE replies with no retry-after trailer

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Deployment:
    """Two response replicas and one of everything else, on this checkout's stack."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        state = Path(tempfile.mkdtemp(prefix="parley-faults-"))
        self.main = Launcher(state / "a", env=env)
        self.second_addr = f"127.0.0.1:{free_port()}"
        self.second = Launcher(state / "b", env={**env, "PARLEY_RESPONSE_ADDR": self.second_addr,
                                                  "PARLEY_RESPONSE_METRICS_PORT": str(free_port())})
        self.settings = Settings()  # the caller put `env` in the environment

    @property
    def targets(self) -> list[str]:
        return [self.settings.response_addr, self.second_addr]

    async def start(self) -> None:
        await db.migrate(self.settings.postgres_dsn)
        await create_all_topics(self.settings)
        self.main.start()
        self.second.start(["response"])
        await self.main.wait_serving(self.settings, timeout=180)
        await _wait_serving(self.second_addr, 120)

    def stop(self) -> None:
        self.second.stop()
        self.main.stop()


async def _wait_serving(addr: str, timeout: float) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with channel(addr) as ch:
        while time.monotonic() < deadline:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{addr} not SERVING after {timeout:.0f}s")


# --- the faults -------------------------------------------------------------------------------

def _kill_component(name: str) -> None:
    _signal_component(name, signal.SIGKILL)


def _signal_component(name: str, sig: signal.Signals) -> None:
    cfg = stack.StackConfig.from_env()
    pid = stack.managed_pid(cfg, name)
    if pid is None:
        raise RuntimeError(f"{name} of this checkout's stack is not running")
    os.kill(pid, sig)


def _restart_postgres() -> None:
    cfg = stack.StackConfig.from_env()
    stop_postgres(cfg, pg_layout(cfg), progress_console(False))
    stack.up(progress=False, timeout=UP_TIMEOUT)


def _sigterm_response(dep: Deployment) -> None:
    pid = dep.main.pid("response")
    if pid is None:
        raise RuntimeError("response is not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while dep.main.pid("response") and time.monotonic() < deadline:
        time.sleep(0.1)


async def inject(fault: Fault, dep: Deployment) -> None:
    """Make the fault happen and end it; returns once the failed part was started again."""
    if fault.name in ("redis", "kafka"):
        _kill_component(fault.name)
        await asyncio.sleep(fault.outage_seconds)
        await asyncio.to_thread(stack.up, False, UP_TIMEOUT)
    elif fault.name in ("redis-frozen", "kafka-frozen", "postgres-frozen"):
        # SIGSTOP of the server and every process it started: connections stay open, nothing is answered.
        with stack.frozen(fault.name.removesuffix("-frozen")):
            await asyncio.sleep(fault.outage_seconds)
    elif fault.name == "postgres":
        await asyncio.to_thread(_restart_postgres)
    elif fault.name == "postgres-killed":      # every PostgreSQL process SIGKILLed: nothing flushed
        if kill_postgres(pg_layout(stack.StackConfig.from_env())) is None:
            raise RuntimeError("postgres of this checkout's stack is not running")
        await asyncio.sleep(fault.outage_seconds)
        await asyncio.to_thread(stack.up, False, UP_TIMEOUT)
    elif fault.name == "worker":
        dep.main.kill("worker")
        await asyncio.sleep(fault.outage_seconds)
        dep.main.start(["worker"])
    elif fault.name in ("response", "response-killed"):
        if fault.name == "response":
            await asyncio.to_thread(_sigterm_response, dep)
        else:                                   # no drain: what it acknowledged waits in its outbox file
            await asyncio.to_thread(dep.main.kill, "response")
        dep.main.start(["response"])
        await _wait_serving(dep.settings.response_addr, 120)
    else:
        raise ValueError(f"unknown fault {fault.name}")


# --- one fault under load -----------------------------------------------------------------------

async def _new_key(settings: Settings, label: str) -> tuple[str, str]:
    async with channel(settings.search_addr) as ch:
        reply = await search_pb2_grpc.SearchServiceStub(ch).CreateProductKey(
            search_pb2.CreateProductKeyRequest(
                name=f"Faults {label}", id=f"faults-{label}-{uuid.uuid4().hex[:6]}",
                settings=search_pb2.KeySettings(rate_limit_per_second=10_000, rate_limit_burst=10_000)),
            metadata=(("x-parley-admin-token", settings.admin_token),), timeout=10)
    await add_knowledge_path(settings, reply.key.id, DEMO_DIR)
    return reply.key.id, reply.product_key


async def _warm(targets: list[str], secret: str) -> None:
    """Each cached question answered once on each replica, so hits are hits during the fault."""
    for addr in targets:
        async with channel(addr) as ch:
            stub = response_pb2_grpc.ResponseServiceStub(ch)
            for q in QUESTIONS:
                await stub.Chat(response_pb2.ChatRequest(product_key=secret, message=q), timeout=30)


def _start_load(dep: Deployment, secret: str, rate: float, workdir: Path) -> tuple[subprocess.Popen, Path, Path]:
    questions, out, stop = workdir / "questions.json", workdir / "chats.jsonl", workdir / "stop"
    questions.write_text(json.dumps(QUESTIONS))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fault_load", "--targets", ",".join(dep.targets), "--secret", secret,
         "--questions", str(questions), "--rate", str(rate), "--out", str(out), "--stop-file", str(stop)],
        cwd=REPO, env={**os.environ, **dep.env}, stdin=subprocess.DEVNULL)
    return proc, out, stop


async def _stored(dsn: str, key_id: str, acked: set[str], settle_seconds: float) -> tuple[int, int]:
    """(acknowledged turns stored, turns counted twice), waiting up to settle_seconds for the worker."""
    deadline = time.monotonic() + settle_seconds
    stored, twice = 0, 0
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                rows = await conn.fetch("SELECT request_id, count(*) AS n FROM conversations "
                                        "WHERE product_key_id = $1 GROUP BY request_id", key_id)
                counted = await conn.fetchval("SELECT coalesce(sum(turns), 0) FROM metrics_minute "
                                              "WHERE product_key_id = $1", key_id)
            finally:
                await conn.close()
            per_request = {r["request_id"]: r["n"] for r in rows}
            stored = sum(1 for rid in acked if rid in per_request)
            rows_total = sum(per_request.values())
            twice = sum(n - 1 for n in per_request.values()) + max(0, int(counted) - rows_total)
            if stored == len(acked) and int(counted) >= rows_total:
                return stored, twice
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        if time.monotonic() > deadline:
            return stored, twice
        await asyncio.sleep(1.0)


def _summarise(name: str, chats: list[dict], fault_start: float, restored: float) -> FaultResult:
    # "During": from the fault until the part is back, and at least MIN_WINDOW seconds (a killed
    # worker is started again at once, but its effects last while it starts).
    during = [c for c in chats if fault_start <= c["t"] <= max(restored, fault_start + MIN_WINDOW)]
    hits = [c for c in during if c["kind"] == "hit"]
    failed_after = [c["t"] for c in chats if c["t"] >= fault_start and c["code"] != "OK"]
    result = FaultResult(name, sent=len(chats))
    result.answered_pct = 100.0 * sum(c["code"] == "OK" for c in during) / max(1, len(during))
    result.hits_answered_pct = 100.0 * sum(c["code"] == "OK" for c in hits) / max(1, len(hits))
    result.errors = dict(Counter(c["code"] for c in chats if c["code"] != "OK"))
    result.acknowledged = sum(c["code"] == "OK" for c in chats)
    result.unavailable_without_hint = sum(c["code"] == "UNAVAILABLE" and not c.get("retry_after") for c in chats)
    result.recover_seconds = max(0.0, max(failed_after, default=restored) - restored)
    return result


async def run_fault(fault: Fault, dep: Deployment, *, rate: float, before: float, after: float,
                    settle_seconds: float, log: Callable[[str], None] = console.print) -> FaultResult:
    key_id, secret = await _new_key(dep.settings, fault.name)
    await _warm(dep.targets, secret)
    workdir = Path(tempfile.mkdtemp(prefix=f"parley-fault-{fault.name}-"))
    proc, out, stop = _start_load(dep, secret, rate, workdir)
    try:
        await asyncio.sleep(before)
        log(f"  fault {fault.name}: injecting (outage {fault.outage_seconds:.0f}s)")
        fault_start = time.time()
        await inject(fault, dep)
        restored = time.time()
        log(f"  fault {fault.name}: back after {restored - fault_start:.1f}s")
        await asyncio.sleep(after)
    finally:
        stop.touch()
        await asyncio.to_thread(proc.wait, 60)
    chats = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    result = _summarise(fault.name, chats, fault_start, restored)
    acked = {c["rid"] for c in chats if c["code"] == "OK"}
    result.stored, result.counted_twice = await _stored(dep.settings.postgres_dsn, key_id, acked, settle_seconds)
    result.lost = len(acked) - result.stored
    return result


async def run_faults(faults: list[Fault], *, rate: float, before: float, after: float, settle_seconds: float,
                     extra_env: dict[str, str] | None = None) -> list[FaultResult]:
    env = {**bench_env(), "PARLEY_LOG_LEVEL": "INFO", **(extra_env or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dep = Deployment(env)
    results = []
    try:
        await dep.start()
        for fault in faults:
            result = await run_fault(fault, dep, rate=rate, before=before, after=after, settle_seconds=settle_seconds)
            console.print(f"  {result.as_dict()}")
            results.append(result)
    finally:
        dep.stop()
        stack.up(progress=False, timeout=UP_TIMEOUT)  # whatever a failed run left down is started again
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results
