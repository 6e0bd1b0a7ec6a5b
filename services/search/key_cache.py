"""Product-key cache in Redis: a valid key's record by the hash of its secret, invalidated on change.

Bounds (documented in the README): a revoked or rotated secret is refused as soon as the admin RPC
returns, on every replica, because the cache is shared and the RPC overwrites the entry with a
tombstone. A knowledge change deletes the entry (admin RPCs directly; the scraper's changes through
parley.knowledge.updated.v1, consumed by every search replica). The only window left is a Plan that
read PostgreSQL just before the change and writes the cache just after it: that stale entry lives at
most `PARLEY_KEY_CACHE_TTL_SECONDS`. Tombstones block such late writes (the write is SET NX)."""

from __future__ import annotations

import logging

import redis.asyncio as redis

from services.search.keys import KeyRecord

logger = logging.getLogger(__name__)

_PREFIX = "parley:key:"
TOMBSTONE = b"-"


def cache_key(key_hash: bytes) -> str:
    return _PREFIX + key_hash.hex()


class KeyCache:
    def __init__(self, client: redis.Redis, ttl_seconds: float) -> None:
        self._redis = client
        self._ttl_ms = max(1, int(ttl_seconds * 1000))

    async def get(self, key_hash: bytes) -> KeyRecord | bytes | None:
        """The cached record, TOMBSTONE for a secret that was revoked or rotated away, or None."""
        raw = await self._redis.get(cache_key(key_hash))
        if raw is None or raw == TOMBSTONE:
            return raw
        try:
            return KeyRecord.from_json(raw)
        except (ValueError, TypeError):
            logger.warning("unreadable key cache entry; ignoring it")
            return None

    async def put(self, key_hash: bytes, record: KeyRecord) -> None:
        # NX: a tombstone (or a fresher entry) written meanwhile wins over this possibly stale read.
        await self._redis.set(cache_key(key_hash), record.to_json(), px=self._ttl_ms, nx=True)

    async def forbid(self, key_hash: bytes) -> None:
        """The secret no longer works (revoked or rotated away)."""
        await self._redis.set(cache_key(key_hash), TOMBSTONE, px=self._ttl_ms)

    async def invalidate(self, key_hash: bytes) -> None:
        await self._redis.delete(cache_key(key_hash))
