"""Local stack installation: system packages from apt, Kafka jars from Maven Central."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deploy.local.config import (
    COMPONENTS,
    HERE,
    PG_EXTENSIONS,
    PG_MAJOR,
    LocalStackError,
    StackConfig,
    progress_console,
)
from deploy.local.processes import run


@dataclass(frozen=True)
class _Requirement:
    what: str
    package: str
    present: Callable[[], bool]


def pg_bindir() -> Path | None:
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
    bindir = pg_bindir()
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
            _Requirement("java", "default-jre-headless", lambda: find_java() is not None),
            _Requirement("mvn", "maven", lambda: shutil.which("mvn") is not None),
        ]
    if "postgres" in wanted:
        reqs += [
            _Requirement("PostgreSQL server", "postgresql", lambda: pg_bindir() is not None),
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
    run(["apt-get", "update", "-q"], "apt-get update", log_path, env=env)
    console.print(f"[bold]apt[/] apt-get install {listing}")
    run(
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


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(HERE / "pom.xml").getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise LocalStackError("kafka.version property missing from deploy/local/pom.xml")
    return node.text.strip()


def _kafka_jar(cfg: StackConfig) -> Path:
    return cfg.kafka_libs / f"kafka_2.13-{kafka_version()}.jar"


def _ensure_kafka_libs(cfg: StackConfig, console: Console) -> None:
    if _kafka_jar(cfg).exists():
        console.print(f"[green]ok[/] Kafka {kafka_version()} jars in {cfg.kafka_libs}")
        return
    if cfg.kafka_libs.exists():
        shutil.rmtree(cfg.kafka_libs)  # another Kafka version: refetch a clean classpath
    cfg.kafka_libs.mkdir(parents=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalStackError("mvn not found; install the Debian package 'maven'")
    console.print(f"[bold]maven[/] fetching Kafka {kafka_version()} jars from Maven Central")
    run(
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
    console = progress_console(progress)
    cfg = StackConfig.from_env()
    wanted = [c for c in components if c in COMPONENTS]
    _ensure_system_packages(wanted, cfg, console)
    if "kafka" in wanted:
        _ensure_kafka_libs(cfg, console)
