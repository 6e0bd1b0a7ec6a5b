"""What every scenario shares: the console, free ports, and the services started for one run."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from rich.console import Console

from services.cli import DEMO_DIR, add_knowledge_path, create_key
from services.common import db
from services.common.pb.parley.v1 import search_pb2
from services.settings import Settings
from services.common.topics import create_all_topics
from services.launcher import REPO, Launcher

console = Console(width=140)
RESULTS = REPO / "bench" / "results"


def save_results(report: dict, prefix: str) -> Path:
    """Writes a run's results to bench/results/<prefix>-<time>.json (gitignored) and says where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    console.print(f"results written to {path.relative_to(REPO)}")
    return path
QUESTIONS = [
    "How much does the Plus plan cost per year?",
    "How do I reset my password?",
    "Where are your data centers?",
    "What happens when two people edit the same file offline?",
    "Do you offer refunds?",
    "Which payment methods do you accept?",
    "Is there a desktop app for Linux?",
    "How long do deleted files stay in the trash?",
]


# Ports for servers a test or bench starts are taken below Linux's ephemeral range (32768-60999), from
# which the kernel picks the local ports of outgoing connections: a port it handed out free could be
# taken by a client's connection before the server that is to listen on it binds it.
_PORTS = range(30000, 32700)
_given: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, not given before by this process."""
    for _ in range(500):
        port = random.choice(_PORTS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_listening_on(addr: str) -> int:
    """The process that listens on `addr` (host:port), for per-process CPU accounting."""
    port = addr.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"pid=(\d+)", out)
    if not found:
        raise RuntimeError(f"no process listens on {addr}")
    return int(found.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_env() -> dict[str, str]:
    """Own topics, worker group and ports, so a run never mixes with the demo or the tests."""
    run = uuid.uuid4().hex[:8]
    env = {
        "PARLEY_TOPIC_NAMESPACE": f".bench-{run}",
        "PARLEY_WORKER_APP_ID": f"parley-bench-{run}",
        "PARLEY_ADMIN_TOKEN": f"bench-{run}",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    for name in ("search", "response", "scraper", "analytics"):
        env[f"PARLEY_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    for name in ("search", "response", "scraper", "analytics", "worker", "crawler", "indexer"):
        env[f"PARLEY_{name.upper()}_METRICS_PORT"] = str(free_port())
    return env


@asynccontextmanager
async def own_database() -> AsyncIterator[str]:
    """A database of the run's own on the configured PostgreSQL server, migrated, and the run's
    PARLEY_POSTGRES_DSN while it lasts (processes started meanwhile inherit it); dropped afterwards.
    A bench that writes rows and deletes them again then measures tables of the same (fresh) state in
    every run, not the dead rows and grown indexes that the development database gathers."""
    configured = Settings().postgres_dsn
    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    dsn = urlsplit(configured)._replace(path=f"/{name}").geturl()
    admin = await asyncpg.connect(configured)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    saved = os.environ.get("PARLEY_POSTGRES_DSN")
    os.environ["PARLEY_POSTGRES_DSN"] = dsn
    try:
        await db.migrate(dsn)
        yield dsn
    finally:
        if saved is None:
            os.environ.pop("PARLEY_POSTGRES_DSN", None)
        else:
            os.environ["PARLEY_POSTGRES_DSN"] = saved
        admin = await asyncpg.connect(configured)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def started_services(extra_env: dict[str, str] | None = None) -> AsyncIterator[tuple[Settings, str, str]]:
    """All services and the worker with the demo knowledge loaded into a fresh key:
    yields (settings, key id, key secret); stops everything afterwards."""
    env = {**bench_env(), **(extra_env or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = Settings()
    await db.migrate(settings.postgres_dsn)
    await create_all_topics(settings)
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="parley-bench-")), env=env)
    launcher.start()
    try:
        console.print("starting the services ...")
        await launcher.wait_serving(settings)
        # Every chat turn, cached or not, is charged to the key's rate limit: the load must not be limited.
        key = await create_key(settings, "Bench", f"bench-{uuid.uuid4().hex[:8]}", key_settings=search_pb2.KeySettings(
            rate_limit_per_second=1_000_000, rate_limit_burst=1_000_000))
        await add_knowledge_path(settings, key.key.id, DEMO_DIR)
        yield settings, key.key.id, key.product_key
    finally:
        launcher.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
