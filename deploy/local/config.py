"""Local stack settings: ports, directories and endpoints from the environment, lock, console."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
HOST = "127.0.0.1"

COMPONENTS: tuple[str, ...] = ("kafka", "postgres", "redis")

DEFAULT_KAFKA_PORT = 19092
DEFAULT_PG_PORT = 15432
DEFAULT_REDIS_PORT = 16379

PG_MAJOR = "15"
PG_USER = "parley"
PG_PASSWORD = "parley"
PG_DATABASE = "parley"
PG_EXTENSIONS: tuple[str, ...] = ("pg_trgm",)
PG_SERVER_USER = "postgres"  # OS user that owns the cluster when we run as root
PG_SUPERUSER = "postgres"  # bootstrap database superuser created by initdb

KAFKA_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

OVERRIDE_ENV = {
    "kafka": "PARLEY_KAFKA_BOOTSTRAP",
    "postgres": "PARLEY_POSTGRES_DSN",
    "redis": "PARLEY_REDIS_URL",
}

# Substrings expected in /proc/<pid>/cmdline, guarding against recycled pids.
PROCESS_MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres", "redis": "redis-server"}


class LocalStackError(RuntimeError):
    """A local stack operation failed; the message says what to do or where to look."""


@dataclass(frozen=True)
class Endpoints:
    """Where the application should connect."""

    kafka_bootstrap: str
    postgres_dsn: str
    redis_url: str

    def for_component(self, name: str) -> str:
        return {
            "kafka": self.kafka_bootstrap,
            "postgres": self.postgres_dsn,
            "redis": self.redis_url,
        }[name]


@dataclass(frozen=True)
class ComponentStatus:
    """State of one component as reported by :func:`status`."""

    name: str
    endpoint: str
    managed: bool  # False when the endpoint comes from an environment override
    pid: int | None
    running: bool
    answering: bool



def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError as exc:
        raise LocalStackError(f"{name}={raw!r} is not a port number") from exc
    if not 0 < port < 65536:
        raise LocalStackError(f"{name}={port} is out of range")
    return port


@dataclass(frozen=True)
class StackConfig:
    """Ports and directories of the local stack, resolved from the environment."""

    state_dir: Path
    kafka_port: int
    kafka_controller_port: int
    pg_port: int
    redis_port: int

    @classmethod
    def from_env(cls) -> StackConfig:
        raw_dir = os.environ.get("PARLEY_LOCAL_DIR", "").strip()
        state = Path(raw_dir).expanduser() if raw_dir else REPO_ROOT / ".local"
        kafka_port = _env_port("PARLEY_LOCAL_KAFKA_PORT", DEFAULT_KAFKA_PORT)
        return cls(
            state_dir=state.resolve(),
            kafka_port=kafka_port,
            kafka_controller_port=_env_port("PARLEY_LOCAL_KAFKA_CONTROLLER_PORT", kafka_port + 1),
            pg_port=_env_port("PARLEY_LOCAL_PG_PORT", DEFAULT_PG_PORT),
            redis_port=_env_port("PARLEY_LOCAL_REDIS_PORT", DEFAULT_REDIS_PORT),
        )

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def local_endpoints(self) -> Endpoints:
        return Endpoints(
            kafka_bootstrap=f"{HOST}:{self.kafka_port}",
            postgres_dsn=(
                f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{self.pg_port}/{PG_DATABASE}"
            ),
            redis_url=f"redis://{HOST}:{self.redis_port}/0",
        )

    def override(self, name: str) -> str | None:
        """The endpoint from the environment, unless unset or equal to the local default."""
        value = os.environ.get(OVERRIDE_ENV[name], "").strip()
        if not value or value == self.local_endpoints().for_component(name):
            return None
        return value

    def endpoint(self, name: str) -> str:
        return self.override(name) or self.local_endpoints().for_component(name)


def state_dir() -> Path:
    """The directory holding the stack's data, logs and pid files."""
    return StackConfig.from_env().state_dir


def endpoints() -> Endpoints:
    """Endpoints the application should use: environment overrides, else the local stack."""
    cfg = StackConfig.from_env()
    return Endpoints(*(cfg.endpoint(name) for name in COMPONENTS))


def progress_console(progress: bool) -> Console:
    return Console(stderr=True, highlight=False, quiet=not progress)


@contextlib.contextmanager
def stack_lock(cfg: StackConfig) -> Iterator[None]:
    """Serialise ``up``/``down`` between processes (e.g. parallel test workers)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / "stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
