"""Applying a batch whatever fails: transient errors are retried until the write succeeds, any other
error splits the batch until the events that cause it are found and dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from services.analytics.stream.decode import DeadLetter
from services.analytics.stream.sink import Applied, Position
from services.common import errors

logger = logging.getLogger(__name__)

# Errors that are about an event, not about the database or the network: a value PostgreSQL refuses
# (SQLSTATE class 22 data exception, 23 integrity constraint, 54 program limit such as an index row
# too large) or one the client cannot encode. Only these split a batch and dead-letter an event.
# Everything else (a connection lost or refused, an admin shutdown, a deadlock, a client state error
# while the server restarts, a broker away, a bug) is retried until the write goes in, with the stall
# shown in health: an unknown error must never cost an acknowledged event.
POISON: tuple[type[BaseException], ...] = (
    asyncpg.DataError,                          # class 22
    asyncpg.IntegrityConstraintViolationError,  # class 23
    asyncpg.ProgramLimitExceededError,          # class 54
    asyncpg.exceptions._base.DataError,         # client side: a value asyncpg cannot encode
    ValueError, TypeError, OverflowError,       # a value the row builders cannot convert
)


def is_transient(exc: BaseException) -> bool:
    """Worth writing again: any error but a poison one. A cancellation (a revoked partition's writer
    past its grace, the worker stopping) is none: tenacity catches it too, and retried, the write went
    on as an orphan for as long as PostgreSQL stayed away, holding its batch and a connection."""
    return isinstance(exc, Exception) and not isinstance(exc, POISON)


def dependency_failing(exc: BaseException) -> bool:
    """A failure that is a dependency's, which a restart of the worker cannot cure: PostgreSQL
    unreachable, restarting or refusing writes for now (errors.is_transient), or a broker unreachable,
    timing out or electing a leader (a dead letter's send)."""
    return errors.is_transient(exc) or (isinstance(exc, KafkaError)
                                        and (exc.retriable or isinstance(exc, KafkaTimeoutError)))


@dataclass(slots=True)
class Record:
    """One Kafka record of a batch: where it is, its bytes (for a dead letter) and its event,
    None when it was dead-lettered (it only advances the offset)."""

    position: Position
    key: bytes | None
    value: bytes | None
    event: Any


# (records as (position, event) pairs, their rows built beforehand or None) -> what was applied
Write = Callable[[Sequence[tuple[Position, Any]], Any], Awaitable[Applied]]
SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


class BatchApplier:
    """Writes batches with `write` (one transaction: events and offsets), retrying transient errors
    for as long as it takes, and isolating poison events by bisection. Reports failures to
    `on_failure(reason, dependency_failing(error))` and the first success after them to
    `on_recovery()` (health)."""

    def __init__(self, write: Write, send_dead_letter: SendDeadLetter, *, max_wait: float = 5.0,
                 on_failure: Callable[[str, bool], None] = lambda _r, _t: None,
                 on_recovery: Callable[[], None] = lambda: None) -> None:
        self._write = write
        self._send_dead_letter = send_dead_letter
        self._max_wait = max_wait
        self._on_failure = on_failure
        self._on_recovery = on_recovery

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = describe(exc) if exc else "unknown"
        logger.warning("write failed (%s), attempt %d; retrying", reason, state.attempt_number)
        self._on_failure(reason, exc is not None and dependency_failing(exc))

    async def retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.1, max=self._max_wait),
            before_sleep=self._before_sleep,
            reraise=True,
        ):
            with attempt:
                result = await call()
        self._on_recovery()
        return result

    async def apply(self, records: Sequence[Record], prepared: Any = None) -> Applied:
        """Everything in `records` is stored or dead-lettered when this returns; never raises
        except on cancellation. `prepared`: what the route built from the records' events before
        the write (Route.prepare); a part of a split batch is written without it."""
        if not records:
            return Applied()
        pairs = [(r.position, r.event) for r in records]
        try:
            return await self.retrying(lambda: self._write(pairs, prepared))
        except Exception as exc:  # noqa: BLE001 - not transient: something in the batch is poison
            if len(records) == 1:
                return await self._dead_letter(records[0], describe(exc))
            logger.warning("a batch of %d failed (%s); splitting it", len(records), describe(exc))
            mid = len(records) // 2
            # In order: the first half's offsets are stored before the second half is tried.
            first = await self.apply(records[:mid])
            return first + await self.apply(records[mid:])

    async def _dead_letter(self, record: Record, reason: str) -> Applied:
        pos = record.position
        letter = DeadLetter(pos.topic, pos.partition, pos.offset, record.key, record.value, reason)
        await self.retrying(lambda: self._send_dead_letter(letter))
        # Only now may the offset move past it: the dead letter is on the broker.
        return await self.retrying(lambda: self._write([(pos, None)], None))
