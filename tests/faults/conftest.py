"""The fault suite kills and restarts the shared stack's Redis, broker and PostgreSQL: it runs last,
so no other test meets a dependency on its way back (the order is set in tests/conftest.py)."""

from __future__ import annotations

import pytest

# A dependency thawed or restarted by the test before is answering again, but the services' health
# watchers may not have looked yet (every 0.5 s while not serving; the broker can take ~20 s to lead
# its partitions again after a freeze).
BACK_SECONDS = 60.0


@pytest.fixture(autouse=True)
async def _services_serving_at_the_start(request):
    """Every fault test that uses the launched services starts from all of them SERVING: a test that
    froze or killed a dependency and ended without waiting for the services' recovery (it needed only
    the dependency itself) must not fail the next test's first call. Not back within BACK_SECONDS fails
    the test, naming the service."""
    if "services" in request.fixturenames:
        launcher = request.getfixturevalue("services")
        settings = request.getfixturevalue("settings")
        await launcher.wait_serving(settings, timeout=BACK_SECONDS)
