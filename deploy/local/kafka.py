"""Local Kafka broker (KRaft): configuration, storage format and start."""

from __future__ import annotations

import base64
import string
import uuid
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from deploy.local.config import HERE, HOST, KAFKA_JVM_OPTS, LocalStackError, StackConfig
from deploy.local.install import find_java
from deploy.local.processes import port_open, run, spawn


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


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's own Uuid.randomUuid makes them: 16 random bytes in URL-safe base64,
    never starting with "-", which the storage tool's argument parser would read as an option (one id
    in 64 did, and the format failed)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_cluster_id(cfg: StackConfig) -> str:
    path = cfg.kafka_dir / "cluster.id"
    if path.exists():
        stored = path.read_text().strip()
        if stored and not stored.startswith("-"):
            return stored
    cluster_id = new_cluster_id()
    path.write_text(cluster_id + "\n")
    return cluster_id


def _kafka_java_cmd(cfg: StackConfig, main: str, *args: str, heap: Iterable[str] = ()) -> list[str]:
    java = find_java()
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
    run(cmd, "kafka storage format", cfg.log_file("kafka"))


def start_kafka(cfg: StackConfig, console: Console) -> int:
    for port in (cfg.kafka_port, cfg.kafka_controller_port):
        if port_open(port):
            raise LocalStackError(
                f"port {HOST}:{port} is in use by another process; stop it or set "
                "PARLEY_LOCAL_KAFKA_PORT / PARLEY_LOCAL_KAFKA_CONTROLLER_PORT"
            )
    props = _render_kafka_props(cfg)
    _format_kafka_storage(cfg, props, console)
    cmd = _kafka_java_cmd(cfg, "kafka.Kafka", str(props), heap=KAFKA_JVM_OPTS)
    pid = spawn(cmd, cfg.log_file("kafka"), cfg.pid_file("kafka"), cwd=cfg.kafka_dir)
    console.print(f"[bold]kafka[/] started (pid {pid}), log {cfg.log_file('kafka')}")
    return pid
