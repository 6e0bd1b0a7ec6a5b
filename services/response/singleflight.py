"""In-process single-flight: identical work in flight at once runs once, and every caller sees its stream.

The work runs in its own task, so one caller that goes away does not stop it for the others;
when the last caller leaves, the task is cancelled (which closes an LLM stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

logger = logging.getLogger(__name__)


class _Flight:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.done = False
        self.error: BaseException | None = None
        self.callers = 0
        self.task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    def push(self, item: Any) -> None:
        self.items.append(item)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.done = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[Any]:
        i = 0
        while True:
            while i < len(self.items):
                yield self.items[i]
                i += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self._changed.wait()


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    async def run(self, key: str, work: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[tuple[bool, Any]]:
        """(leader, item) for every item of `work()`; only the first caller for `key` starts it."""
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            flight.task = asyncio.get_running_loop().create_task(self._drive(key, flight, work))
        flight.callers += 1
        try:
            async for item in flight.follow():
                yield leader, item
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.done and flight.task is not None:
                flight.task.cancel()

    async def _drive(self, key: str, flight: _Flight, work: Callable[[], AsyncIterator[Any]]) -> None:
        try:
            async for item in work():
                flight.push(item)
            flight.finish()
        except asyncio.CancelledError:
            flight.finish(asyncio.CancelledError())
        except BaseException as exc:  # noqa: BLE001 - handed to every caller
            flight.finish(exc)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
