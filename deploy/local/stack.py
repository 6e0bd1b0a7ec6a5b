"""Local development stack: real Apache Kafka (KRaft), PostgreSQL 15 and Redis.

The same code starts the servers for ``make run``, the integration tests and CI::

    python -m deploy.local install   # apt packages + Kafka jars (idempotent)
    python -m deploy.local up        # start what is not running, wait until it answers
    python -m deploy.local status
    python -m deploy.local down      # stop what ``up`` started

Endpoints (defaults, matching the application's settings):

* Kafka bootstrap ``127.0.0.1:19092`` (KRaft controller on ``127.0.0.1:19093``)
* PostgreSQL ``postgresql://parley:parley@127.0.0.1:15432/parley``
* Redis ``redis://127.0.0.1:16379/0``

Environment variables:

* ``PARLEY_KAFKA_BOOTSTRAP`` / ``PARLEY_POSTGRES_DSN`` / ``PARLEY_REDIS_URL``: use an
  existing server instead of starting one (``up`` only waits for it to answer). A value
  equal to the local default endpoint is not treated as an override.
* ``PARLEY_LOCAL_KAFKA_PORT`` (controller: ``PARLEY_LOCAL_KAFKA_CONTROLLER_PORT``, default
  broker port + 1), ``PARLEY_LOCAL_PG_PORT``, ``PARLEY_LOCAL_REDIS_PORT``: local ports.
* ``PARLEY_LOCAL_DIR``: state directory (default ``<repo>/.local``), holding
  ``kafka/{libs,data}``, ``pg/data``, ``redis/``, ``logs/*.log`` and ``run/*.pid``.
* ``PARLEY_LOCAL_PG_BINDIR``: PostgreSQL binaries (default ``/usr/lib/postgresql/15/bin``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

from rich import box
from rich.console import Console
from rich.table import Table

from deploy.local.config import (
    COMPONENTS,
    OVERRIDE_ENV,
    PROCESS_MARKERS,
    ComponentStatus,
    Endpoints,
    LocalStackError,
    StackConfig,
    endpoints,
    progress_console,
    stack_lock,
    state_dir,
)
from deploy.local.install import install, pg_bindir
from deploy.local.kafka import start_kafka
from deploy.local.postgres import (
    pg_bootstrap,
    pg_layout,
    pg_postmaster_pid,
    start_postgres,
    stop_postgres,
)
from deploy.local.processes import answers, children_of, pid_alive, read_pid, terminate, wait_answering
from deploy.local.redis import start_redis

__all__ = [
    "ComponentStatus",
    "Endpoints",
    "LocalStackError",
    "StackConfig",
    "down",
    "endpoints",
    "install",
    "managed_pid",
    "state_dir",
    "status",
    "up",
]


def managed_pid(cfg: StackConfig, name: str) -> int | None:
    """Pid of the live process ``up`` started for ``name``; drops stale pid files."""
    pid_path = cfg.pid_file(name)
    pid = pg_postmaster_pid(pg_layout(cfg)) if name == "postgres" else read_pid(pid_path)
    if pid_alive(pid, PROCESS_MARKERS[name]):
        return pid
    pid_path.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def frozen(name: str, at_most: float | None = None) -> Iterator[None]:
    """`name` of this checkout's stack stopped (SIGSTOP), with every process it started, for the block:
    connections stay open and nothing is answered, as a lost network path or a stalled host looks.
    Continued (SIGCONT) however the block ends, and after `at_most` seconds whatever the block does."""
    parent = managed_pid(StackConfig.from_env(), name)
    if parent is None:
        raise RuntimeError(f"{name} of this checkout's stack is not running; start it with `make up`")
    stopped: list[int] = []
    thawed = threading.Lock()

    def thaw() -> None:
        if thawed.acquire(blocking=False):
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    timer = threading.Timer(at_most, thaw) if at_most is not None else None
    try:
        os.kill(parent, signal.SIGSTOP)          # first: a stopped server starts no new process
        stopped.append(parent)
        for pid in children_of(parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        if timer is not None:
            timer.daemon = True
            timer.start()
        yield
    finally:
        if timer is not None:
            timer.cancel()
        thaw()


def _ensure_started(cfg: StackConfig, name: str, console: Console) -> int | None:
    """Start ``name`` unless its process is alive or something already answers.

    Returns the pid to watch while waiting, or None when reusing a server we did not start.
    """
    pid = managed_pid(cfg, name)
    if pid is not None:
        console.print(f"[green]ok[/] {name} already running (pid {pid})")
        return pid
    endpoint = cfg.local_endpoints().for_component(name)
    if answers(name, endpoint):
        console.print(
            f"[yellow]reuse[/] {name} at {endpoint} answers but was not started by this stack"
        )
        return None
    if name == "kafka":
        return start_kafka(cfg, console)
    if name == "redis":
        return start_redis(cfg, console)
    return start_postgres(cfg, pg_layout(cfg, prepare=True), console)


def up(progress: bool = True, timeout: float = 120.0) -> Endpoints:
    """Start every component that is not overridden and not already running; wait until all answer.

    Idempotent: a second call reuses running servers. Returns the endpoints to use.
    Raises :class:`LocalStackError` (pointing at the log file) on failure or timeout.
    """
    console = progress_console(progress)
    cfg = StackConfig.from_env()
    managed = [name for name in COMPONENTS if cfg.override(name) is None]
    started = time.monotonic()
    with stack_lock(cfg):
        if managed:
            install(progress=progress, components=managed)
        cfg.logs_dir.mkdir(parents=True, exist_ok=True)
        # Kafka first: its JVM is the slowest to come up, the others start meanwhile.
        pids: dict[str, int | None] = {
            name: _ensure_started(cfg, name, console)
            for name in ("kafka", "redis", "postgres")
            if name in managed
        }
        if pids.get("postgres") is not None:
            pg_bootstrap(cfg, pg_layout(cfg), console)
        for name in COMPONENTS:
            endpoint = cfg.endpoint(name)
            log_path = cfg.log_file(name) if name in managed else None
            wait_answering(name, endpoint, timeout, log_path, pids.get(name))
            source = "local" if name in managed else f"from {OVERRIDE_ENV[name]}"
            console.print(f"[green]ready[/] {name:<8} {_redact(endpoint)} ({source})")
    console.print(f"[bold green]local stack up[/] in {time.monotonic() - started:.1f}s")
    return endpoints()


def down(progress: bool = True) -> None:
    """Stop exactly the servers ``up`` started (per pid files). Idempotent."""
    console = progress_console(progress)
    cfg = StackConfig.from_env()
    with stack_lock(cfg):
        for name in COMPONENTS:
            if cfg.override(name) is not None:
                console.print(f"[dim]{name} uses {OVERRIDE_ENV[name]}; not managed here[/]")
        for name in ("kafka", "redis"):
            pid = managed_pid(cfg, name)
            if pid is None:
                console.print(f"[dim]{name} not running[/]")
                continue
            terminate(pid, PROCESS_MARKERS[name])
            cfg.pid_file(name).unlink(missing_ok=True)
            console.print(f"[bold]{name}[/] stopped (pid {pid})")
        if pg_bindir() is not None:
            stop_postgres(cfg, pg_layout(cfg), console)
    console.print("[bold]local stack down[/]")


def _redact(endpoint: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", endpoint)


def status(progress: bool = True) -> list[ComponentStatus]:
    """Report each component's endpoint, process and whether it answers; print a table."""
    cfg = StackConfig.from_env()
    result: list[ComponentStatus] = []
    for name in COMPONENTS:
        endpoint = cfg.endpoint(name)
        managed = cfg.override(name) is None
        pid = managed_pid(cfg, name) if managed and _component_installed(name) else None
        answering = answers(name, endpoint)
        running = pid is not None or (not managed and answering)
        result.append(ComponentStatus(name, endpoint, managed, pid, running, answering))
    _print_status(result, cfg, progress)
    return result


def _component_installed(name: str) -> bool:
    return name != "postgres" or pg_bindir() is not None


def _print_status(rows: list[ComponentStatus], cfg: StackConfig, progress: bool) -> None:
    table = Table(title=f"Parley local stack ({cfg.state_dir})", box=box.SIMPLE)
    for column in ("component", "endpoint", "source", "pid", "running", "answering"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.name,
            _redact(row.endpoint),
            "local" if row.managed else "env",
            str(row.pid) if row.pid else "-",
            "[green]yes[/]" if row.running else "[red]no[/]",
            "[green]yes[/]" if row.answering else "[red]no[/]",
        )
    console = Console(highlight=False, quiet=not progress)
    if not console.is_terminal:
        console.width = 120  # pipes and CI logs: do not fold the DSN column at 80
    console.print(table)
