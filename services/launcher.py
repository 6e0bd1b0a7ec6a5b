"""Starts and stops the four services and the stream worker as local processes (make run, tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.settings import Settings

COMPONENTS: dict[str, list[str]] = {
    "search": ["-m", "services.search"],
    "response": ["-m", "services.response"],
    "scraper": ["-m", "services.scraper"],
    "analytics": ["-m", "services.analytics"],
    "worker": ["-m", "services.analytics.stream"],
    "crawler": ["-m", "services.scraper.worker"],
    "indexer": ["-m", "services.search.indexer"],     # the only writer of knowledge
}
GRPC_COMPONENTS = ("search", "response", "scraper", "analytics")
REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        # Reap it first if it is our own child that exited (a zombie still answers kill 0).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Launcher:
    """Processes with pid files under run_dir and logs under log_dir; start is idempotent."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"
        self.env = {**os.environ, **(env or {})}

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, names: Iterable[str] = COMPONENTS) -> list[str]:
        """Starts the components that are not running; refuses when another process holds one of
        their gRPC ports (health checks would otherwise be answered by a stranger)."""
        names = list(names)
        self._check_ports([n for n in names if not self.pid(n)])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for name in names:
            if self.pid(name):
                continue
            with open(self.log_file(name), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, *COMPONENTS[name]],
                    cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            self._pid_file(name).write_text(str(proc.pid))
            started.append(name)
        return started

    def _check_ports(self, names: list[str]) -> None:
        for name in names:
            if name not in GRPC_COMPONENTS:
                continue
            var = f"PARLEY_{name.upper()}_ADDR"
            addr = self.env.get(var) or getattr(Settings(), f"{name}_addr")
            host, _, port = addr.rpartition(":")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex((host or "127.0.0.1", int(port))) == 0:
                    raise RuntimeError(
                        f"{name}: {addr} is already in use by another process; stop it (make down) or set {var}"
                    )

    def stop(self, names: Iterable[str] = COMPONENTS, timeout: float = 30.0) -> list[str]:
        """SIGTERM (the services drain), then SIGKILL whatever is left after timeout."""
        stopping = {n: p for n in names if (p := self.pid(n))}
        for pid in stopping.values():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in stopping.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in stopping.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for name in stopping:
            self._pid_file(name).unlink(missing_ok=True)
        return list(stopping)

    def kill(self, name: str) -> None:
        """SIGKILL one component (fault tests)."""
        pid = self.pid(name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self._pid_file(name).unlink(missing_ok=True)

    async def wait_serving(self, settings: Settings, timeout: float = 90.0) -> None:
        """Until every gRPC service's health says SERVING; raises naming the log of a laggard."""
        addrs = {
            "search": settings.search_addr, "response": settings.response_addr,
            "scraper": settings.scraper_addr, "analytics": settings.analytics_addr,
        }
        deadline = time.monotonic() + timeout
        pending = set(GRPC_COMPONENTS)
        while pending:
            for name in COMPONENTS:
                if name not in GRPC_COMPONENTS and self._pid_file(name).exists() and not self.pid(name):
                    raise RuntimeError(f"{name} exited; see {self.log_file(name)}")
            for name in sorted(pending):
                if not self.pid(name):
                    raise RuntimeError(f"{name} exited; see {self.log_file(name)}")
                async with grpc.aio.insecure_channel(addrs[name]) as ch:
                    try:
                        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            pending.discard(name)
                    except grpc.aio.AioRpcError:
                        pass
            if pending and time.monotonic() > deadline:
                logs = ", ".join(str(self.log_file(n)) for n in sorted(pending))
                raise RuntimeError(f"not SERVING after {timeout:.0f}s: {sorted(pending)}; see {logs}")
            if pending:
                await asyncio.sleep(0.2)
