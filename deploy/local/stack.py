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

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rich import box
from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)

T = TypeVar("T")

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
_PROCESS_MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres", "redis": "redis-server"}

_LOG_ROTATE_BYTES = 20 * 1024 * 1024
_PROBE_TIMEOUT = 3.0
_STOP_TIMEOUT = 30.0

# Popen handles of servers started by this process, kept so they are not garbage
# collected (which would warn) while they are still running.
_CHILDREN: list[subprocess.Popen[bytes]] = []


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


# --------------------------------------------------------------------------- config


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


def _console(progress: bool) -> Console:
    return Console(stderr=True, highlight=False, quiet=not progress)


@contextlib.contextmanager
def _stack_lock(cfg: StackConfig) -> Iterator[None]:
    """Serialise ``up``/``down`` between processes (e.g. parallel test workers)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / "stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------- processes


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int | None, marker: str | None = None) -> bool:
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
        if not _pid_alive(pid, marker):
            return True
        time.sleep(0.2)
    return not _pid_alive(pid, marker)


def _terminate(pid: int, marker: str | None, timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    if not _pid_alive(pid, marker):
        return
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, marker, timeout):
        return
    log.warning("pid %s did not stop after %.0fs, sending SIGKILL", pid, timeout)
    _signal(pid, signal.SIGKILL)
    _wait_gone(pid, marker, 10.0)


def _rotate_log(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))


def _spawn(cmd: list[str], log_path: Path, pid_path: Path, cwd: Path | None = None) -> int:
    """Start ``cmd`` detached (own session), output appended to ``log_path``; write its pid."""
    _rotate_log(log_path)
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


def _run(
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


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# ------------------------------------------------------------------------- probes


def _run_async(factory: Callable[[], Awaitable[T]]) -> T:
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


def _answers(name: str, endpoint: str, timeout: float = _PROBE_TIMEOUT) -> bool:
    """True if the component at ``endpoint`` answers a real protocol request."""
    probe = _PROBES[name]
    with _quiet_loggers("aiokafka", "asyncpg", "redis"):
        try:
            _run_async(lambda: probe(endpoint, timeout))
        except Exception as exc:  # any failure means "not answering yet"
            log.debug("%s at %s not answering: %r", name, endpoint, exc)
            return False
    return True


def _wait_answering(
    name: str,
    endpoint: str,
    timeout: float,
    log_path: Path | None = None,
    pid: int | None = None,
) -> None:
    """Poll until ``name`` answers; fail early if its process ``pid`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if _answers(name, endpoint):
            return
        if pid is not None and not _pid_alive(pid, _PROCESS_MARKERS[name]):
            raise LocalStackError(
                f"{name} exited during startup; see {log_path}:\n{_log_tail(log_path)}"
                if log_path
                else f"{name} exited during startup"
            )
        if time.monotonic() >= deadline:
            hint = f"; see {log_path}" if log_path else f" (set by {OVERRIDE_ENV[name]})"
            raise LocalStackError(
                f"{name} at {endpoint} did not answer within {timeout:.0f}s{hint}"
            )
        time.sleep(0.5)


# ------------------------------------------------------------------------ install


@dataclass(frozen=True)
class _Requirement:
    what: str
    package: str
    present: Callable[[], bool]


def _pg_bindir() -> Path | None:
    """PostgreSQL server binaries: env override, Debian's 15, else the newest Debian version."""
    override = os.environ.get("PARLEY_LOCAL_PG_BINDIR", "").strip()
    if override:
        return Path(override)
    preferred = Path("/usr/lib/postgresql") / PG_MAJOR / "bin"
    if (preferred / "initdb").exists():
        return preferred
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _pg_has_extensions() -> bool:
    bindir = _pg_bindir()
    if bindir is None:
        return False
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return True  # cannot tell; CREATE EXTENSION will report it
    sharedir = subprocess.run(
        [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return all((Path(sharedir) / "extension" / f"{ext}.control").exists() for ext in PG_EXTENSIONS)


def _requirements(components: Iterable[str]) -> list[_Requirement]:
    wanted = set(components)
    reqs: list[_Requirement] = []
    if "kafka" in wanted:
        reqs += [
            _Requirement("java", "default-jre-headless", lambda: _java() is not None),
            _Requirement("mvn", "maven", lambda: shutil.which("mvn") is not None),
        ]
    if "postgres" in wanted:
        reqs += [
            _Requirement("PostgreSQL server", "postgresql", lambda: _pg_bindir() is not None),
            _Requirement("PostgreSQL contrib (pg_trgm)", "postgresql-contrib", _pg_has_extensions),
        ]
        if os.geteuid() == 0:
            reqs.append(
                _Requirement("runuser", "util-linux", lambda: shutil.which("runuser") is not None)
            )
    if "redis" in wanted:
        reqs.append(
            _Requirement(
                "redis-server", "redis-server", lambda: shutil.which("redis-server") is not None
            )
        )
    return reqs


def _apt_install(packages: list[str], console: Console, log_path: Path) -> None:
    listing = " ".join(packages)
    if os.geteuid() != 0:
        raise LocalStackError(
            f"missing system packages: {listing}. Install them first, "
            f"e.g. `sudo apt-get install {listing}`, then retry."
        )
    if shutil.which("apt-get") is None:
        raise LocalStackError(
            f"missing system packages ({listing}) and apt-get is not available; "
            "install the equivalents with your package manager."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    console.print("[bold]apt[/] apt-get update")
    _run(["apt-get", "update", "-q"], "apt-get update", log_path, env=env)
    console.print(f"[bold]apt[/] apt-get install {listing}")
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        f"apt-get install {listing}",
        log_path,
        env=env,
    )


def _ensure_system_packages(components: Iterable[str], cfg: StackConfig, console: Console) -> None:
    reqs = _requirements(components)
    missing = [r for r in reqs if not r.present()]
    if not missing:
        console.print("[green]ok[/] system packages present")
        return
    packages = sorted({r.package for r in missing})
    _apt_install(packages, console, cfg.log_file("install"))
    still = [r for r in missing if not r.present()]
    if still:
        names = ", ".join(f"{r.what} (package {r.package})" for r in still)
        raise LocalStackError(f"still missing after apt-get install: {names}")


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def _kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(HERE / "pom.xml").getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise LocalStackError("kafka.version property missing from deploy/local/pom.xml")
    return node.text.strip()


def _kafka_jar(cfg: StackConfig) -> Path:
    return cfg.kafka_libs / f"kafka_2.13-{_kafka_version()}.jar"


def _ensure_kafka_libs(cfg: StackConfig, console: Console) -> None:
    if _kafka_jar(cfg).exists():
        console.print(f"[green]ok[/] Kafka {_kafka_version()} jars in {cfg.kafka_libs}")
        return
    if cfg.kafka_libs.exists():
        shutil.rmtree(cfg.kafka_libs)  # another Kafka version: refetch a clean classpath
    cfg.kafka_libs.mkdir(parents=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalStackError("mvn not found; install the Debian package 'maven'")
    console.print(f"[bold]maven[/] fetching Kafka {_kafka_version()} jars from Maven Central")
    _run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(HERE / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={cfg.kafka_libs}",
            "-DincludeScope=runtime",
        ],
        "maven dependency:copy-dependencies",
        cfg.log_file("install"),
    )
    if not _kafka_jar(cfg).exists():
        raise LocalStackError(
            f"maven finished but {_kafka_jar(cfg).name} is not in {cfg.kafka_libs}"
        )
    count = len(list(cfg.kafka_libs.glob("*.jar")))
    console.print(f"[green]ok[/] {count} jars in {cfg.kafka_libs}")


def install(progress: bool = True, components: Iterable[str] = COMPONENTS) -> None:
    """Install what the local stack needs (idempotent).

    System packages come from apt (root only; otherwise a clear error names the Debian
    packages), Kafka jars from Maven Central via ``deploy/local/pom.xml``.
    """
    console = _console(progress)
    cfg = StackConfig.from_env()
    wanted = [c for c in components if c in COMPONENTS]
    _ensure_system_packages(wanted, cfg, console)
    if "kafka" in wanted:
        _ensure_kafka_libs(cfg, console)


# -------------------------------------------------------------------------- kafka


def _kafka_props_path(cfg: StackConfig) -> Path:
    return cfg.kafka_dir / "server.properties"


def _render_kafka_props(cfg: StackConfig) -> Path:
    template = string.Template((HERE / "server.properties").read_text())
    text = template.substitute(
        host=HOST,
        broker_port=cfg.kafka_port,
        controller_port=cfg.kafka_controller_port,
        log_dirs=cfg.kafka_data,
    )
    path = _kafka_props_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _kafka_cluster_id(cfg: StackConfig) -> str:
    path = cfg.kafka_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cluster_id + "\n")
    return cluster_id


def _kafka_java_cmd(cfg: StackConfig, main: str, *args: str, heap: Iterable[str] = ()) -> list[str]:
    java = _java()
    if java is None:
        raise LocalStackError("java not found; install the Debian package 'default-jre-headless'")
    return [
        java,
        *heap,
        f"-Dlog4j.configuration={(HERE / 'log4j.properties').as_uri()}",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        "-cp",
        f"{cfg.kafka_libs}/*",
        main,
        *args,
    ]


def _format_kafka_storage(cfg: StackConfig, props: Path, console: Console) -> None:
    if (cfg.kafka_data / "meta.properties").exists():
        return
    cfg.kafka_data.mkdir(parents=True, exist_ok=True)
    console.print("[bold]kafka[/] formatting KRaft storage")
    cmd = _kafka_java_cmd(
        cfg,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _kafka_cluster_id(cfg),
        "-c",
        str(props),
        "--ignore-formatted",
        heap=("-Xmx256m",),
    )
    _run(cmd, "kafka storage format", cfg.log_file("kafka"))


def _start_kafka(cfg: StackConfig, console: Console) -> int:
    for port in (cfg.kafka_port, cfg.kafka_controller_port):
        if _port_open(port):
            raise LocalStackError(
                f"port {HOST}:{port} is in use by another process; stop it or set "
                "PARLEY_LOCAL_KAFKA_PORT / PARLEY_LOCAL_KAFKA_CONTROLLER_PORT"
            )
    props = _render_kafka_props(cfg)
    _format_kafka_storage(cfg, props, console)
    cmd = _kafka_java_cmd(cfg, "kafka.Kafka", str(props), heap=KAFKA_JVM_OPTS)
    pid = _spawn(cmd, cfg.log_file("kafka"), cfg.pid_file("kafka"), cwd=cfg.kafka_dir)
    console.print(f"[bold]kafka[/] started (pid {pid}), log {cfg.log_file('kafka')}")
    return pid


# ----------------------------------------------------------------------- postgres


@dataclass(frozen=True)
class _PgLayout:
    """Where the cluster lives and which OS user runs it."""

    bindir: Path
    root: Path
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; fall back to a short path.
        candidate = self.root / "run"
        if len(str(candidate)) + len("/.s.PGSQL.65535") < 100:
            return candidate
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path("/tmp") / f"parley-pg-{digest}"

    def cmd(self, *args: str) -> list[str]:
        """Command line for a PostgreSQL binary, run as the cluster's OS user."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *cmd]
        return cmd


def _pg_fallback_root(cfg: StackConfig) -> Path:
    digest = hashlib.sha1(str(cfg.state_dir).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"parley-pg-{digest}"


def _chown_to(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _user_can_write(user: str, path: Path) -> bool:
    result = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-w", str(path), "-a", "-x", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def _pg_layout(cfg: StackConfig, prepare: bool = False) -> _PgLayout:
    """Locate (and with ``prepare``, create) the cluster directory.

    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
    system user and its directory is owned by that user. The default location is
    ``<state>/pg``; if ``postgres`` cannot reach it (e.g. the state directory sits under
    a private home directory) the cluster goes to ``/var/tmp/parley-pg-<hash of state
    dir>`` instead. No permissions of parent directories are changed. An existing
    cluster is always reused where it was created.
    """
    bindir = _pg_bindir()
    if bindir is None:
        raise LocalStackError(
            "PostgreSQL binaries not found; install the Debian package 'postgresql'"
        )
    run_as = PG_SERVER_USER if os.geteuid() == 0 else None
    if run_as:
        try:
            pwd.getpwnam(run_as)
        except KeyError as exc:
            raise LocalStackError(
                f"system user {run_as!r} is missing; install the Debian package 'postgresql'"
            ) from exc
    primary = cfg.state_dir / "pg"
    fallback = _pg_fallback_root(cfg)
    for root in (primary, fallback):
        if (root / "data" / "PG_VERSION").exists():
            return _PgLayout(bindir, root, run_as)
    if not prepare:
        return _PgLayout(bindir, primary, run_as)
    root = primary
    root.mkdir(parents=True, exist_ok=True)
    if run_as:
        _chown_to(root, run_as)
        if not _user_can_write(run_as, root):
            log.info("user %s cannot reach %s; using %s", run_as, primary, fallback)
            root = fallback
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _chown_to(root, run_as)
    return _PgLayout(bindir, root, run_as)


def _pg_postmaster_pid(layout: _PgLayout) -> int | None:
    pid = _read_pid(layout.data / "postmaster.pid")
    return pid if _pid_alive(pid, _PROCESS_MARKERS["postgres"]) else None


def _c_utf8_locale() -> str | None:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    names = {line.strip().lower() for line in out.splitlines()}
    return "C.UTF-8" if names & {"c.utf8", "c.utf-8"} else None


def _pg_initdb(cfg: StackConfig, layout: _PgLayout, console: Console) -> None:
    if (layout.data / "PG_VERSION").exists():
        return
    console.print(f"[bold]postgres[/] initdb {layout.data}")
    pwfile = layout.root / "initdb.pw"
    pwfile.write_text(f"{PG_SUPERUSER}\n")
    pwfile.chmod(0o600)
    _chown_to(pwfile, layout.run_as)
    locale = _c_utf8_locale()
    locale_args = [f"--locale={locale}"] if locale else ["--no-locale"]
    try:
        _run(
            layout.cmd(
                "initdb",
                "-D",
                str(layout.data),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                *locale_args,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ),
            "initdb",
            cfg.log_file("postgres"),
            cwd=layout.root,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _start_postgres(cfg: StackConfig, layout: _PgLayout, console: Console) -> int:
    if _port_open(cfg.pg_port):
        raise LocalStackError(
            f"port {HOST}:{cfg.pg_port} is in use by another process; "
            "stop it or set PARLEY_LOCAL_PG_PORT"
        )
    _pg_initdb(cfg, layout, console)
    sock = layout.socket_dir
    sock.mkdir(mode=0o700, parents=True, exist_ok=True)
    _chown_to(sock, layout.run_as)
    server_opts = [
        "-p",
        str(cfg.pg_port),
        "-k",
        str(sock),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    log_path = cfg.log_file("postgres")
    _rotate_log(log_path)
    # No ``-l``: the server inherits pg_ctl's stdout, a log file opened here. That keeps
    # the log in the state dir even when the server's OS user cannot write there.
    cmd = layout.cmd(
        "pg_ctl", "-D", str(layout.data), "-w", "-t", "60", "-o", shlex.join(server_opts), "start"
    )
    log.debug("run: %s", shlex.join(cmd))
    with open(log_path, "ab") as log_fh:
        rc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=layout.root,
            start_new_session=True,
            check=False,
        ).returncode
    if rc != 0:
        raise LocalStackError(
            f"pg_ctl start failed (exit {rc}); see {log_path}:\n{_log_tail(log_path)}"
        )
    pid = _pg_postmaster_pid(layout)
    if pid is None:
        raise LocalStackError(f"postgres is not running after pg_ctl start; see {log_path}")
    cfg.pid_file("postgres").parent.mkdir(parents=True, exist_ok=True)
    cfg.pid_file("postgres").write_text(f"{pid}\n")
    console.print(f"[bold]postgres[/] started (pid {pid}), log {log_path}")
    return pid


async def _pg_bootstrap_async(layout: _PgLayout, port: int) -> list[str]:
    import asyncpg

    done: list[str] = []
    admin = await asyncpg.connect(
        host=str(layout.socket_dir), port=port, user=PG_SUPERUSER, database="postgres", timeout=10
    )
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", PG_USER):
            await admin.execute(f"CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}'")
            done.append(f"role {PG_USER}")
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE):
            await admin.execute(f"CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}")
            done.append(f"database {PG_DATABASE}")
    finally:
        await admin.close()
    db = await asyncpg.connect(
        host=str(layout.socket_dir), port=port, user=PG_SUPERUSER, database=PG_DATABASE, timeout=10
    )
    try:
        for ext in PG_EXTENSIONS:
            if not await db.fetchval("SELECT 1 FROM pg_extension WHERE extname = $1", ext):
                await db.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
                done.append(f"extension {ext}")
    finally:
        await db.close()
    return done


def _pg_bootstrap(cfg: StackConfig, layout: _PgLayout, console: Console) -> None:
    """Create the application role, database and extensions if they are missing."""
    try:
        created = _run_async(lambda: _pg_bootstrap_async(layout, cfg.pg_port))
    except Exception as exc:
        raise LocalStackError(
            f"postgres bootstrap (role/database/extensions) failed: {exc}; "
            f"see {cfg.log_file('postgres')}"
        ) from exc
    if created:
        console.print(f"[bold]postgres[/] created {', '.join(created)}")


def _stop_postgres(cfg: StackConfig, layout: _PgLayout, console: Console) -> None:
    pid = _pg_postmaster_pid(layout)
    if pid is not None:
        stop = ("pg_ctl", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60", "stop")
        try:
            _run(
                layout.cmd(*stop),
                "pg_ctl stop",
                cfg.log_file("postgres"),
                cwd=layout.root,
            )
        except LocalStackError as exc:
            log.warning("%s; signalling pid %s", exc, pid)
            _terminate(pid, _PROCESS_MARKERS["postgres"])
        console.print(f"[bold]postgres[/] stopped (pid {pid})")
    else:
        console.print("[dim]postgres not running[/]")
    cfg.pid_file("postgres").unlink(missing_ok=True)


# -------------------------------------------------------------------------- redis


def _start_redis(cfg: StackConfig, console: Console) -> int:
    if _port_open(cfg.redis_port):
        raise LocalStackError(
            f"port {HOST}:{cfg.redis_port} is in use by another process; "
            "stop it or set PARLEY_LOCAL_REDIS_PORT"
        )
    server = shutil.which("redis-server")
    if server is None:
        raise LocalStackError("redis-server not found; install the Debian package 'redis-server'")
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log_file("redis")
    cmd = [
        server,
        "--port",
        str(cfg.redis_port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(cfg.redis_dir),
        "--logfile",
        str(log_path),
    ]
    pid = _spawn(cmd, log_path, cfg.pid_file("redis"), cwd=cfg.redis_dir)
    console.print(f"[bold]redis[/] started (pid {pid}), log {log_path}")
    return pid


# ------------------------------------------------------------------------ up/down


def _managed_pid(cfg: StackConfig, name: str) -> int | None:
    """Pid of the live process ``up`` started for ``name``; drops stale pid files."""
    pid_path = cfg.pid_file(name)
    pid = _pg_postmaster_pid(_pg_layout(cfg)) if name == "postgres" else _read_pid(pid_path)
    if _pid_alive(pid, _PROCESS_MARKERS[name]):
        return pid
    pid_path.unlink(missing_ok=True)
    return None


def _ensure_started(cfg: StackConfig, name: str, console: Console) -> int | None:
    """Start ``name`` unless its process is alive or something already answers.

    Returns the pid to watch while waiting, or None when reusing a server we did not start.
    """
    pid = _managed_pid(cfg, name)
    if pid is not None:
        console.print(f"[green]ok[/] {name} already running (pid {pid})")
        return pid
    endpoint = cfg.local_endpoints().for_component(name)
    if _answers(name, endpoint):
        console.print(
            f"[yellow]reuse[/] {name} at {endpoint} answers but was not started by this stack"
        )
        return None
    if name == "kafka":
        return _start_kafka(cfg, console)
    if name == "redis":
        return _start_redis(cfg, console)
    return _start_postgres(cfg, _pg_layout(cfg, prepare=True), console)


def up(progress: bool = True, timeout: float = 120.0) -> Endpoints:
    """Start every component that is not overridden and not already running; wait until all answer.

    Idempotent: a second call reuses running servers. Returns the endpoints to use.
    Raises :class:`LocalStackError` (pointing at the log file) on failure or timeout.
    """
    console = _console(progress)
    cfg = StackConfig.from_env()
    managed = [name for name in COMPONENTS if cfg.override(name) is None]
    started = time.monotonic()
    with _stack_lock(cfg):
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
            _pg_bootstrap(cfg, _pg_layout(cfg), console)
        for name in COMPONENTS:
            endpoint = cfg.endpoint(name)
            log_path = cfg.log_file(name) if name in managed else None
            _wait_answering(name, endpoint, timeout, log_path, pids.get(name))
            source = "local" if name in managed else f"from {OVERRIDE_ENV[name]}"
            console.print(f"[green]ready[/] {name:<8} {_redact(endpoint)} ({source})")
    console.print(f"[bold green]local stack up[/] in {time.monotonic() - started:.1f}s")
    return endpoints()


def down(progress: bool = True) -> None:
    """Stop exactly the servers ``up`` started (per pid files). Idempotent."""
    console = _console(progress)
    cfg = StackConfig.from_env()
    with _stack_lock(cfg):
        for name in COMPONENTS:
            if cfg.override(name) is not None:
                console.print(f"[dim]{name} uses {OVERRIDE_ENV[name]}; not managed here[/]")
        for name in ("kafka", "redis"):
            pid = _managed_pid(cfg, name)
            if pid is None:
                console.print(f"[dim]{name} not running[/]")
                continue
            _terminate(pid, _PROCESS_MARKERS[name])
            cfg.pid_file(name).unlink(missing_ok=True)
            console.print(f"[bold]{name}[/] stopped (pid {pid})")
        if _pg_bindir() is not None:
            _stop_postgres(cfg, _pg_layout(cfg), console)
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
        pid = _managed_pid(cfg, name) if managed and _component_installed(name) else None
        answering = _answers(name, endpoint)
        running = pid is not None or (not managed and answering)
        result.append(ComponentStatus(name, endpoint, managed, pid, running, answering))
    _print_status(result, cfg, progress)
    return result


def _component_installed(name: str) -> bool:
    return name != "postgres" or _pg_bindir() is not None


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
