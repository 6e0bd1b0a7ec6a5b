"""Local PostgreSQL cluster: layout, initdb, start, bootstrap of role and database, stop."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deploy.local.config import (
    HOST,
    PG_DATABASE,
    PG_EXTENSIONS,
    PG_PASSWORD,
    PG_SERVER_USER,
    PG_SUPERUSER,
    PG_USER,
    PROCESS_MARKERS,
    LocalStackError,
    StackConfig,
)
from deploy.local.install import pg_bindir
from deploy.local.processes import (
    children_of,
    log_tail,
    pid_alive,
    port_open,
    read_pid,
    rotate_log,
    run,
    run_async,
    terminate,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PgLayout:
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


def pg_layout(cfg: StackConfig, prepare: bool = False) -> PgLayout:
    """Locate (and with ``prepare``, create) the cluster directory.

    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
    system user and its directory is owned by that user. The default location is
    ``<state>/pg``; if ``postgres`` cannot reach it (e.g. the state directory sits under
    a private home directory) the cluster goes to ``/var/tmp/parley-pg-<hash of state
    dir>`` instead. No permissions of parent directories are changed. An existing
    cluster is always reused where it was created.
    """
    bindir = pg_bindir()
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
            return PgLayout(bindir, root, run_as)
    if not prepare:
        return PgLayout(bindir, primary, run_as)
    root = primary
    root.mkdir(parents=True, exist_ok=True)
    if run_as:
        _chown_to(root, run_as)
        if not _user_can_write(run_as, root):
            log.info("user %s cannot reach %s; using %s", run_as, primary, fallback)
            root = fallback
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _chown_to(root, run_as)
    return PgLayout(bindir, root, run_as)


def pg_postmaster_pid(layout: PgLayout) -> int | None:
    pid = read_pid(layout.data / "postmaster.pid")
    return pid if pid_alive(pid, PROCESS_MARKERS["postgres"]) else None


def _c_utf8_locale() -> str | None:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    names = {line.strip().lower() for line in out.splitlines()}
    return "C.UTF-8" if names & {"c.utf8", "c.utf-8"} else None


def _pg_initdb(cfg: StackConfig, layout: PgLayout, console: Console) -> None:
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
        run(
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


def start_postgres(cfg: StackConfig, layout: PgLayout, console: Console) -> int:
    if port_open(cfg.pg_port):
        raise LocalStackError(
            f"port {HOST}:{cfg.pg_port} is in use by another process; "
            "stop it or set PARLEY_LOCAL_PG_PORT"
        )
    _pg_initdb(cfg, layout, console)
    sock = layout.socket_dir
    sock.mkdir(mode=0o700, parents=True, exist_ok=True)
    _chown_to(sock, layout.run_as)
    # fsync and full-page writes are off: this cluster is for development and tests, and what they
    # guard against is a crash of the machine. synchronous_commit stays on: with it off, a commit
    # returns before its WAL leaves PostgreSQL's shared memory, and a SIGKILL of the server lost the
    # last ~40 acknowledged commits (measured with one-row transactions in a loop); with fsync off
    # it costs one write() per commit.
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
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    _wait_for_killed_server(layout)
    log_path = cfg.log_file("postgres")
    rotate_log(log_path)
    # No ``-l``: the server inherits pg_ctl's stdout, a log file opened here. That keeps
    # the log in the state dir even when the server's OS user cannot write there.
    cmd = layout.cmd(
        "pg_ctl", "-D", str(layout.data), "-w", "-t", "60", "-o", shlex.join(server_opts), "start"
    )
    log.debug("run: %s", shlex.join(cmd))
    for attempt in range(_START_ATTEMPTS):
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
        if rc == 0 or not any(m in log_tail(log_path) for m in _KILLED_SERVER_REMAINS):
            break
        # The backends of a killed server exit when they notice their postmaster is gone; until
        # then PostgreSQL refuses to start over their shared memory.
        log.info("postgres: a killed server's processes are still exiting (attempt %d)", attempt + 1)
        time.sleep(2.0)
    if rc != 0:
        raise LocalStackError(
            f"pg_ctl start failed (exit {rc}); see {log_path}:\n{log_tail(log_path)}"
        )
    pid = pg_postmaster_pid(layout)
    if pid is None:
        raise LocalStackError(f"postgres is not running after pg_ctl start; see {log_path}")
    cfg.pid_file("postgres").parent.mkdir(parents=True, exist_ok=True)
    cfg.pid_file("postgres").write_text(f"{pid}\n")
    console.print(f"[bold]postgres[/] started (pid {pid}), log {log_path}")
    return pid


async def _pg_bootstrap_async(layout: PgLayout, port: int) -> list[str]:
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


def pg_bootstrap(cfg: StackConfig, layout: PgLayout, console: Console) -> None:
    """Create the application role, database and extensions if they are missing."""
    try:
        created = run_async(lambda: _pg_bootstrap_async(layout, cfg.pg_port))
    except Exception as exc:
        raise LocalStackError(
            f"postgres bootstrap (role/database/extensions) failed: {exc}; "
            f"see {cfg.log_file('postgres')}"
        ) from exc
    if created:
        console.print(f"[bold]postgres[/] created {', '.join(created)}")


# What PostgreSQL says when it will not start because a killed server's processes still exist.
_KILLED_SERVER_REMAINS = ('lock file "postmaster.pid" already exists', "is still in use")
_START_ATTEMPTS = 5


def _wait_for_killed_server(layout: PgLayout, timeout: float = 30.0) -> None:
    """After a SIGKILL the old postmaster is a zombie until it is reaped, and PostgreSQL refuses to
    start while the pid its postmaster.pid names exists (kill(pid, 0) succeeds on a zombie): wait
    for it to go, up to `timeout` seconds."""
    pid = read_pid(layout.data / "postmaster.pid")
    if pid is None or pg_postmaster_pid(layout) is not None:
        return
    deadline = time.monotonic() + timeout
    while Path("/proc", str(pid)).exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def kill_postgres(layout: PgLayout) -> int | None:
    """SIGKILL the postmaster and every process it started, as an out-of-memory kill of its
    container would: no shutdown checkpoint, nothing flushed. Returns the postmaster's pid (None if
    it was not running). For fault tests; `stop_postgres` is the orderly stop."""
    pid = pg_postmaster_pid(layout)
    if pid is None:
        return None
    for victim in (pid, *children_of(pid)):
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pid


def stop_postgres(cfg: StackConfig, layout: PgLayout, console: Console) -> None:
    pid = pg_postmaster_pid(layout)
    if pid is not None:
        stop = ("pg_ctl", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60", "stop")
        try:
            run(
                layout.cmd(*stop),
                "pg_ctl stop",
                cfg.log_file("postgres"),
                cwd=layout.root,
            )
        except LocalStackError as exc:
            log.warning("%s; signalling pid %s", exc, pid)
            terminate(pid, PROCESS_MARKERS["postgres"])
        console.print(f"[bold]postgres[/] stopped (pid {pid})")
    else:
        console.print("[dim]postgres not running[/]")
    cfg.pid_file("postgres").unlink(missing_ok=True)
