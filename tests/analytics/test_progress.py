"""The worker's liveness: a stall a restart may cure fails it; a dependency that is away does not."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from bench.harness import free_port
from services.analytics.stream.apply import BatchApplier, Record, dependency_failing
from services.analytics.stream.progress import Progress
from services.analytics.stream.sink import Position


def _waiting(stall_seconds: float = 30) -> Progress:
    p = Progress(stall_seconds=stall_seconds)
    p.observe_lag("t", 0, highwater=50, position=10)
    return p


def test_writes_failing_for_a_dependency_keep_the_worker_live_however_long():
    p = _waiting()
    p.failing("ConnectionRefusedError: connect call failed", True)
    started = p.failing_since
    p.failing("CannotConnectNowError: the database system is starting up", True)
    ok, detail = p.healthy(now=started + 3600)  # the first failure counts, not the latest
    assert ok, detail
    assert "writes failing for 3600s (CannotConnectNowError" in detail and "40 message(s) waiting" in detail
    assert "a restart cannot cure" in detail


def test_writes_failing_for_another_reason_turn_unhealthy_after_the_stall_time():
    p = _waiting()
    p.failing("UndefinedColumnError: column \"x\" does not exist", False)
    started = p.failing_since
    ok, detail = p.healthy(now=started + 5)
    assert ok and "writes failing for 5s (UndefinedColumnError" in detail
    ok, detail = p.healthy(now=started + 31)
    assert not ok and "UndefinedColumnError" in detail
    p.recovered()
    p.advanced("t", 0, 50)
    ok, detail = p.healthy()
    assert ok and "failing" not in detail


def test_the_stall_time_of_a_failure_of_its_own_counts_from_its_first_since_a_dependencys():
    p = _waiting()
    p.failing("ConnectionRefusedError: connect call failed", True)
    started = p.failing_since
    p.failing("KeyError: 'minute'", False)
    own = p.unexplained_since
    assert p.healthy(now=own + 29)[0]
    assert not p.healthy(now=own + 31)[0]
    p.failing("ConnectionResetError: connection lost", True)   # the dependency again: live
    assert p.healthy(now=started + 3600)[0]


def test_messages_waiting_with_no_progress_and_no_failing_write_turn_unhealthy_after_the_stall_time():
    p = _waiting()
    assert p.healthy(now=p.last_progress + 29)[0]
    ok, detail = p.healthy(now=p.last_progress + 31)
    assert not ok and "40 message(s) waiting and no progress for 31s" in detail
    idle = Progress(stall_seconds=30)   # nothing waiting: idle, not stuck
    assert idle.healthy(now=idle.last_progress + 3600)[0]


def test_which_failures_are_a_dependencys():
    assert dependency_failing(ConnectionRefusedError("refused"))
    assert dependency_failing(asyncpg.CannotConnectNowError("starting up"))
    assert dependency_failing(KafkaConnectionError("broker away"))
    assert dependency_failing(KafkaTimeoutError())
    assert not dependency_failing(asyncpg.UndefinedColumnError("no such column"))
    assert not dependency_failing(KeyError("minute"))


async def _failing_while(write) -> Progress:
    """The progress of a BatchApplier (as the worker wires it) once `write` has failed a few times."""
    p = _waiting()
    applier = BatchApplier(write, _no_dead_letters, max_wait=0.05, on_failure=p.failing, on_recovery=p.recovered)
    applying = asyncio.ensure_future(applier.apply([Record(Position("t", 0, 10), None, b"", object())]))
    try:
        for _ in range(200):
            if p.failing_since is not None:
                break
            await asyncio.sleep(0.05)
        assert p.failing_since is not None, "the write never failed"
    finally:
        applying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await applying
    return p


async def _no_dead_letters(_letter) -> None:
    raise AssertionError("nothing here is poison")


async def test_a_worker_whose_postgres_refuses_connections_stays_live_and_one_whose_write_is_wrong_does_not(stack):
    unreachable = f"postgresql://parley:parley@127.0.0.1:{free_port()}/parley"

    async def write_to_nowhere(_records, _prepared):
        await asyncpg.connect(unreachable, timeout=5)

    p = await _failing_while(write_to_nowhere)
    ok, detail = p.healthy(now=p.failing_since + 3600)
    assert ok, detail
    assert "writes failing" in detail and "ConnectionRefusedError" in detail

    async def wrong_write(_records, _prepared):
        conn = await asyncpg.connect(stack.postgres_dsn, timeout=5)
        try:
            await conn.fetch("SELECT no_such_column FROM stream_offsets")
        finally:
            await conn.close()

    p = await _failing_while(wrong_write)
    ok, detail = p.healthy(now=p.failing_since + 3600)
    assert not ok and "UndefinedColumnError" in detail, detail
