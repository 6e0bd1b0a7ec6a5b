"""When to try a Redis that failed: one call a period probes it, the others go without it until the
probe's verdict; a success ends the outage at once."""

from __future__ import annotations

import time

from services.common.redis_client import RedisHealth


def test_one_call_a_period_probes_a_failing_redis_and_a_success_ends_the_outage():
    health = RedisHealth(0.05, "going without")
    assert health.available() and health.available()          # up: every call tries it
    health.failed("op", ConnectionError("refused"))
    assert health.down and not health.available()
    time.sleep(0.06)
    assert health.available()                                  # this call probes
    assert not health.available() and not health.available()  # the others wait for its verdict
    health.failed("op", TimeoutError())                        # still failing: another period
    assert not health.available()
    time.sleep(0.06)
    assert health.available()
    health.ok()
    assert not health.down and health.available() and health.available()
