"""Domain errors that the gRPC layer maps to status codes; logic modules raise these, never grpc."""

from __future__ import annotations

import math


class ParleyError(Exception):
    """An error with a gRPC status name and a message meant for the caller."""

    code = "INTERNAL"

    def __init__(self, message: str, *, trailers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.trailers = trailers or {}


class InvalidArgument(ParleyError):
    code = "INVALID_ARGUMENT"


class Unauthenticated(ParleyError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ParleyError):
    code = "PERMISSION_DENIED"


class NotFound(ParleyError):
    code = "NOT_FOUND"


class AlreadyExists(ParleyError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ParleyError):
    """The request is valid but the state of what it names refuses it (e.g. a revoked key)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(ParleyError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ParleyError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ParleyError):
    code = "DEADLINE_EXCEEDED"


# A dependency that is restarting, unreachable or refusing writes for now (is_transient): worth a retry.
RETRY_AFTER_TRAILER = "retry-after"
TRANSIENT_RETRY_AFTER_SECONDS = 1
# The same hint in milliseconds: an error sent with either hint is sent with both (with_retry_hints).
RETRY_AFTER_MS_TRAILER = "retry-after-ms"


def with_retry_hints(trailers: dict[str, str]) -> dict[str, str]:
    """`trailers` with both retry hints when they hold one: `retry-after` in whole seconds (rounded
    up, as HTTP's) and `retry-after-ms`; a hint set already is kept, one that is not a number is
    left alone. Clients of either convention see when to retry."""
    seconds, ms = trailers.get(RETRY_AFTER_TRAILER), trailers.get(RETRY_AFTER_MS_TRAILER)
    if (seconds is None) == (ms is None):
        return trailers
    try:
        if ms is None:
            ms = str(max(0, math.ceil(float(seconds) * 1000)))
        else:
            seconds = str(max(0, math.ceil(float(ms) / 1000)))
    except (ValueError, OverflowError):
        return trailers
    return {**trailers, RETRY_AFTER_TRAILER: seconds, RETRY_AFTER_MS_TRAILER: ms}


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, OSError]
    try:
        import asyncpg

        # 08xxx (connection), 57P01/57P02/57P03 (admin or crash shutdown, cannot connect now),
        # and the client side of a closed connection or pool.
        types += [asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
                  asyncpg.InterfaceError,
                  # A server that refuses writes for its own state, not the statement's: read-only
                  # (25006: default_transaction_read_only, or a standby the DSN reaches after a
                  # failover) and out of resources (class 53: disk full, out of memory, too many
                  # connections, a configured limit). It accepts them again once that passes.
                  asyncpg.exceptions.ReadOnlySQLTransactionError, asyncpg.exceptions.InsufficientResourcesError,
                  # Seen in the fault suite when PostgreSQL shut down under a query in flight:
                  # "cannot switch to state 12; another operation (2) is in progress".
                  asyncpg.exceptions.InternalClientError,
                  # Seen right after PostgreSQL was frozen (SIGSTOP) and thawed: a BEGIN whose reply
                  # never came before its caller gave up left the server's session in a transaction
                  # the client did not know of; the next BEGIN ISOLATION LEVEL fails (25001), and the
                  # connection is rolled back as it goes back to the pool.
                  asyncpg.exceptions.ActiveSQLTransactionError]
    except ImportError:  # pragma: no cover - every service installs asyncpg
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        types += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_TRANSIENT = _transient_types()


def is_transient(exc: BaseException) -> bool:
    """An error of an unreachable or restarting dependency (PostgreSQL, Redis, a socket), or of one that
    refuses writes for now (PostgreSQL read-only or out of disk or memory): worth a retry."""
    return isinstance(exc, _TRANSIENT)


def as_unavailable(exc: BaseException) -> Unavailable | None:
    """UNAVAILABLE with a retry hint for an error of a dependency that is unreachable, restarting or
    refusing writes for now (is_transient); None for anything else (a bug stays INTERNAL)."""
    if not is_transient(exc):
        return None
    return Unavailable(
        "a dependency is unavailable (restarting, unreachable or not accepting writes); retry shortly",
        trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)},
    )
