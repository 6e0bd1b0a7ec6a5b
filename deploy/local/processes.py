"""Local stack processes: pid files, spawn and terminate, logs, ports and protocol probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from deploy.local.config import HOST, OVERRIDE_ENV, PROCESS_MARKERS, LocalStackError

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_ROTATE_BYTES = 20 * 1024 * 1024
_PROBE_TIMEOUT = 3.0
_STOP_TIMEOUT = 30.0

# Popen handles of servers started by this process, kept so they are not garbage
# collected (which would warn) while they are still running.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def children_of(parent: int) -> list[int]:
    """The pids of the processes whose parent is `parent` (a server's workers, e.g. PostgreSQL's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path("/proc") / str(pid)
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        raw = proc.joinpath("cmdline").read_bytes()
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return True
    return marker is None or marker in cmdline


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, marker: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.2)
    return not pid_alive(pid, marker)


def terminate(pid: int, marker: str | None, timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    if not pid_alive(pid, marker):
        return
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, marker, timeout):
        return
    log.warning("pid %s did not stop after %.0fs, sending SIGKILL", pid, timeout)
    _signal(pid, signal.SIGKILL)
    _wait_gone(pid, marker, 10.0)


def rotate_log(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))


def spawn(cmd: list[str], log_path: Path, pid_path: Path, cwd: Path | None = None) -> int:
    """Start ``cmd`` detached (own session), output appended to ``log_path``; write its pid."""
    rotate_log(log_path)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    log.debug("spawn: %s", shlex.join(cmd))
    with open(log_path, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN.append(proc)
    pid_path.write_text(f"{proc.pid}\n")
    return proc.pid


def run(
    cmd: list[str],
    what: str,
    log_path: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``cmd`` to completion; raise :class:`LocalStackError` with its output on failure."""
    log.debug("run: %s", shlex.join(cmd))
    result = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n{output}\n")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-20:])
        where = f" (full output in {log_path})" if log_path else ""
        raise LocalStackError(f"{what} failed with exit code {result.returncode}{where}:\n{tail}")
    return output


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0



# ------------------------------------------------------------------------- probes


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion, also when called from inside a running event loop."""

    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence client libraries that log connection errors while a server is starting."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


async def _probe_kafka(bootstrap: str, timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    finally:
        await admin.close()


async def _probe_postgres(dsn: str, timeout: float) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def _probe_redis(url: str, timeout: float) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        await client.ping()
    finally:
        await client.aclose()


_PROBES: dict[str, Callable[[str, float], Awaitable[None]]] = {
    "kafka": _probe_kafka,
    "postgres": _probe_postgres,
    "redis": _probe_redis,
}


def answers(name: str, endpoint: str, timeout: float = _PROBE_TIMEOUT) -> bool:
    """True if the component at ``endpoint`` answers a real protocol request."""
    probe = _PROBES[name]
    with _quiet_loggers("aiokafka", "asyncpg", "redis"):
        try:
            run_async(lambda: probe(endpoint, timeout))
        except Exception as exc:  # any failure means "not answering yet"
            log.debug("%s at %s not answering: %r", name, endpoint, exc)
            return False
    return True


def wait_answering(
    name: str,
    endpoint: str,
    timeout: float,
    log_path: Path | None = None,
    pid: int | None = None,
) -> None:
    """Poll until ``name`` answers; fail early if its process ``pid`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if answers(name, endpoint):
            return
        if pid is not None and not pid_alive(pid, PROCESS_MARKERS[name]):
            raise LocalStackError(
                f"{name} exited during startup; see {log_path}:\n{log_tail(log_path)}"
                if log_path
                else f"{name} exited during startup"
            )
        if time.monotonic() >= deadline:
            hint = f"; see {log_path}" if log_path else f" (set by {OVERRIDE_ENV[name]})"
            raise LocalStackError(
                f"{name} at {endpoint} did not answer within {timeout:.0f}s{hint}"
            )
        time.sleep(0.5)
