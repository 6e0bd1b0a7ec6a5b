"""Admission of a chat turn, before the answer cache: the product key must be valid and within its
rate limit, whether the answer will come from the cache or not.

One Redis round trip for a key whose record is cached, shared by the turns that wait together
(services/common/product_keys.py: a Lua script reads the record and takes a token of the key's bucket
for each). A record that is not cached is read from PostgreSQL (read-only, the search service owns
the table) and cached for every replica. Redis down: PostgreSQL with a few seconds in process, and a
token bucket per process. A revoked or rotated secret finds its tombstone in Redis and is refused
here, before any cached answer could be served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import redis.asyncio as redis

from services.common.product_keys import KeyRecord, KeyValidator
from services.response.settings import ResponseSettings


class Admission:
    def __init__(self, settings: ResponseSettings, client: redis.Redis,
                 turns_in_flight: Callable[[], int] = lambda: 1) -> None:
        """`turns_in_flight`: the process's turns under way. While others are, an admission waits
        `admission_linger_seconds` for more to join its Redis round trip (none waits at concurrency 1)."""
        linger_seconds = settings.admission_linger_seconds

        def linger() -> float:
            return linger_seconds if turns_in_flight() > 1 else 0.0

        self._dsn = settings.postgres_dsn
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self.keys = KeyValidator(
            client, lambda: self._pool, ttl_seconds=settings.key_cache_ttl_seconds,
            local_seconds=settings.key_local_cache_seconds, default_rate=settings.rate_limit_per_second,
            default_burst=settings.rate_limit_burst, linger=linger,
        )

    async def admit(self, secret: str) -> KeyRecord:
        await self._open()
        return await self.keys.admit(secret)

    async def pool(self) -> asyncpg.Pool:
        """The service's PostgreSQL pool, also for its other read-only lookups (the turn a feedback rates)."""
        await self._open()
        assert self._pool is not None
        return self._pool

    async def _open(self) -> None:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    # No connection is made until a key is not found in Redis: a PostgreSQL outage
                    # does not stop cached keys (and cached answers).
                    self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=4, command_timeout=5)

    async def close(self) -> None:
        await self.keys.close()
        if self._pool is not None:
            await self._pool.close()
