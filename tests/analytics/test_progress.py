"""The worker's health: a stall of progress, and writes failing while they are retried."""

from __future__ import annotations

from services.analytics.stream.progress import Progress


def test_failing_writes_are_reported_and_turn_unhealthy_after_the_stall_time():
    p = Progress(stall_seconds=30)
    p.observe_lag("t", 0, highwater=50, position=10)
    p.failing("ConnectionRefusedError: connect call failed")
    started = p.failing_since
    ok, detail = p.healthy(now=started + 5)
    assert ok and "writes failing for 5s (ConnectionRefusedError" in detail
    p.failing("CannotConnectNowError: the database system is starting up")
    ok, detail = p.healthy(now=started + 31)  # the first failure counts, not the latest
    assert not ok and "CannotConnectNowError" in detail
    p.recovered()
    p.advanced("t", 0, 50)
    ok, detail = p.healthy()
    assert ok and "failing" not in detail
