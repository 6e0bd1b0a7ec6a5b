"""Bounds of StreamMetrics: live streams held per key and per process, and one update shared by a key's streams."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from services.common.errors import RETRY_AFTER_TRAILER, ResourceExhausted

# A refused stream is worth retrying once a dashboard closes, or on another instance (a new connection).
RETRY_AFTER_SECONDS = 5
# A key's streams take an update computed this recently instead of reading PostgreSQL again: with any
# number of streams at any interval, a key costs at most one read a second.
SHARED_SECONDS = 1.0


class StreamSlots:
    """Live streams counted per key and per process. A stream polls PostgreSQL every interval for as long
    as its client stays, so without a bound one key's dashboards (a product key opening a few hundred at
    1 s) take the process's CPU and pool from every other tenant."""

    def __init__(self, per_key: int, per_process: int, shared_seconds: float = SHARED_SECONDS,
                 what: str = "live metrics streams") -> None:
        self._what = what
        self._per_key = per_key
        self._per_process = per_process
        self._shared_seconds = shared_seconds
        self._total = 0
        self._by_key: dict[str, int] = {}
        self._updates: dict[str, tuple[float, asyncio.Task]] = {}

    @contextlib.contextmanager
    def held(self, key_id: str | None) -> Iterator[None]:
        """A slot for one stream of `key_id` while the block runs (None: the admin token, held to the
        process's bound only); RESOURCE_EXHAUSTED with a retry hint past either bound."""
        if self._total >= self._per_process:
            raise _refused(f"this instance holds {self._per_process} {self._what}, its most; "
                           "retry later or on another instance")
        if key_id is not None and self._by_key.get(key_id, 0) >= self._per_key:
            raise _refused(f"product key {key_id} holds {self._per_key} {self._what}, the most a key "
                           "may hold here; close one, or retry later")
        self._total += 1
        if key_id is not None:
            self._by_key[key_id] = self._by_key.get(key_id, 0) + 1
        try:
            yield
        finally:
            self._total -= 1
            if key_id is not None:
                self._by_key[key_id] -= 1
                if not self._by_key[key_id]:
                    del self._by_key[key_id]

    async def update(self, key_id: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """What `compute` returns for `key_id`, shared with the key's other streams: one computed (or
        under way) in the last `shared_seconds` is taken as it is; a failed one is not kept."""
        now = time.monotonic()
        latest = self._updates.get(key_id)
        if latest is None or now - latest[0] >= self._shared_seconds or _failed(latest[1]):
            self._forget_stale(now)
            latest = now, asyncio.ensure_future(compute())
            self._updates[key_id] = latest
        # Shielded: one stream leaving must not cancel the update the others wait for.
        return await asyncio.shield(latest[1])

    def _forget_stale(self, now: float) -> None:
        stale = [k for k, (at, task) in self._updates.items() if now - at >= self._shared_seconds and task.done()]
        for key_id in stale:
            del self._updates[key_id]


def _failed(task: asyncio.Task) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _refused(message: str) -> ResourceExhausted:
    return ResourceExhausted(message, trailers={RETRY_AFTER_TRAILER: str(RETRY_AFTER_SECONDS)})
