"""`parley migrate --schema-only` (a search pod's init container) needs PostgreSQL only: with Kafka
unreachable it applies the schema and succeeds, where the full `migrate` fails saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.harness import free_port

REPO = Path(__file__).resolve().parents[2]


def _migrate(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PARLEY_POSTGRES_DSN": stack.postgres_dsn,
           "PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}     # nothing listens there
    return subprocess.run([sys.executable, "-m", "services.cli", "migrate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_schema_is_migrated_without_kafka(stack):
    done = _migrate(stack, "--schema-only")
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "schema up to date" in said and "topics" not in said
    full = _migrate(stack)
    assert full.returncode != 0
    assert "bootstrap" in (full.stdout + full.stderr).lower()
