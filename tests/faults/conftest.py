"""The fault suite kills and restarts the shared stack's Redis, broker and PostgreSQL: it runs last,
so no other test meets a dependency on its way back."""

from __future__ import annotations


def pytest_collection_modifyitems(items):
    faults = [item for item in items if "tests/faults/" in item.nodeid]
    if faults:
        items[:] = [item for item in items if item not in faults] + faults
