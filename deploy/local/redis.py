"""Local Redis server: start."""

from __future__ import annotations

import shutil

from rich.console import Console

from deploy.local.config import HOST, LocalStackError, StackConfig
from deploy.local.processes import port_open, spawn


def start_redis(cfg: StackConfig, console: Console) -> int:
    if port_open(cfg.redis_port):
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
    pid = spawn(cmd, log_path, cfg.pid_file("redis"), cwd=cfg.redis_dir)
    console.print(f"[bold]redis[/] started (pid {pid}), log {log_path}")
    return pid
