"""Fixtures of the search tests: Redis, plan helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.pb.parley.v1 import search_pb2
from services.common.redis_client import create_redis


@pytest.fixture(scope="session")
async def redis_client(stack) -> AsyncIterator:
    client = create_redis(stack.redis_url)
    yield client
    await client.aclose()


async def plan(search, secret: str, message: str, max_passages: int = 0) -> search_pb2.PlanResponse:
    return await search.Plan(
        search_pb2.PlanRequest(product_key=secret, message=message, max_passages=max_passages), timeout=10
    )
