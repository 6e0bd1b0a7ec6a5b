"""A pool like the stream worker's (its connections carry the staging table), for the sink tests."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.analytics.stream.sink import create_pool
from services.settings import Settings


@pytest.fixture(scope="session")
async def sink_pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=4)
    yield pool
    await pool.close()
