"""The fault suite kills and restarts the shared stack's Redis, broker and PostgreSQL: it runs last,
so no other test meets a dependency on its way back (the order is set in tests/conftest.py)."""

from __future__ import annotations
