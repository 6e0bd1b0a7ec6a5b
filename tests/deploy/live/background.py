"""Builds that `make test` starts in the background while the other tests run (.ci/test.sh): the
live stage waits for one through the status file the script names, showing progress, and fails
with the build's log when it failed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def wait_for_build(status_variable: str, what: str, timeout: float = 3600.0) -> bool:
    """Waits for the build whose exit status .ci/test.sh writes to the file named by
    `status_variable` (its log beside it, `<name>.log`). False when no such build was started
    (pytest run alone): the caller builds itself."""
    status = os.environ.get(status_variable)
    if not status:
        return False
    path = Path(status)
    log = path.with_suffix(".log")
    started = time.monotonic()
    while not path.exists():
        waited = time.monotonic() - started
        if waited > timeout:
            pytest.fail(f"the {what} build did not finish in {timeout:.0f}s; see {log}", pytrace=False)
        if int(waited) % 30 == 0:
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            print(f"\nwaiting for the {what} build ({waited:.0f}s): {last[0] if last else 'starting'}", flush=True)
        time.sleep(1)
    if path.read_text().strip() != "0":
        tail = "\n".join(log.read_text().splitlines()[-30:]) if log.exists() else ""
        pytest.fail(f"the {what} build failed (exit {path.read_text().strip()}):\n{tail}", pytrace=False)
    return True
