"""In-process single-flight: identical work in flight at once runs once, and every caller sees its stream.

The work runs in its own task, so one caller that goes away does not stop it for the others;
when the last caller leaves, the task is cancelled (which closes an LLM stream). The work runs
to a deadline of its own: the latest of its callers', pushed later by each caller that joins it (not
the first caller's, which gave a patient caller who joined a hurried one the hurried one's fallback).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.common.errors import RETRY_AFTER_TRAILER, Unavailable
from services.response.llm import Deadline

logger = logging.getLogger(__name__)


def _own_copy(error: BaseException) -> BaseException:
    """`error` for one caller: a copy, so that its traceback and what the caller sets on it (a
    request id in its trailers) are its own, not every caller's; the error itself when it cannot be
    made again from its arguments. (Attributes are copied shallowly: set a new dict, never change one.)"""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - e.g. keyword-only arguments: shared as it is
        return error


class _Flight:
    def __init__(self, deadline: float) -> None:
        self.deadline = Deadline(deadline)
        self.items: list[Any] = []
        self.done = False
        self.error: BaseException | None = None
        self.callers = 0
        self.abandoned = False   # its last caller left: it is being cancelled, and nobody follows it
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
                    own = _own_copy(self.error)
                    if own is self.error:
                        raise own
                    raise own from self.error   # the original holds the traceback of the work itself
                return
            await self._changed.wait()


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}

    def in_flight(self) -> int:
        return len(self._flights)

    async def run(self, key: str, work: Callable[[Deadline], AsyncIterator[Any]],
                  deadline: float) -> AsyncIterator[tuple[bool, Any]]:
        """(leader, item) for every item of `work(the flight's deadline)`; only the first caller for
        `key` starts it, and each caller's `deadline` (event-loop time) extends the flight's."""
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _Flight(deadline)
            self._flights[key] = flight
            flight.task = asyncio.get_running_loop().create_task(self._drive(key, flight, work))
        else:
            flight.deadline.extend(deadline)
        flight.callers += 1
        try:
            async for item in flight.follow():
                yield leader, item
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.done and flight.task is not None:
                # It leaves the table now, not once its cleanup is over (a Redis unlock, closing the
                # LLM's stream): the same question asked meanwhile starts a flight of its own instead
                # of joining this one and being handed its cancellation.
                flight.abandoned = True
                if self._flights.get(key) is flight:
                    del self._flights[key]
                flight.task.cancel()

    async def _drive(self, key: str, flight: _Flight, work: Callable[[Deadline], AsyncIterator[Any]]) -> None:
        try:
            async for item in work(flight.deadline):
                flight.push(item)
            flight.finish()
        except asyncio.CancelledError:
            # Abandoned, nobody hears of it. Cancelled by anything else (the loop shutting down),
            # its callers did not cancel it themselves: a CancelledError raised in their tasks would
            # pass for their own.
            flight.finish(None if flight.abandoned else Unavailable(
                "the answer was interrupted; retry shortly", trailers={RETRY_AFTER_TRAILER: "1"}))
        except BaseException as exc:  # noqa: BLE001 - handed to every caller
            flight.finish(exc)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
