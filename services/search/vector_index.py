"""Dense search within one key: an in-process index of the key's chunk embeddings.

The embeddings live in PostgreSQL beside their chunks (written by the indexing path); a replica
loads a key's matrix on the first search that needs it, with the knowledge version it was read at
(one snapshot). It is dropped when a `parley.knowledge.updated.v1` event announces a newer version,
and reloaded when a Plan sees a newer version on the key record, so every replica answers from the
same knowledge after a change. The loaded keys are bounded by bytes (least recently used go first).

Search is exact: one matrix-vector product over the key's unit vectors (cosine similarity). A key of
50k chunks is about 75 MB and a few milliseconds per query; a key much larger than that would want an
approximate index (hnswlib or faiss from PyPI, built at load time from the same rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg
import numpy as np

from services.common.embedding import DIMENSIONS

logger = logging.getLogger(__name__)

_LOAD = """
SELECT id, embedding FROM knowledge_chunks
WHERE product_key_id = $1 AND embedding_model = $2 AND embedding IS NOT NULL
"""


@dataclass
class KeyVectors:
    version: int
    ids: np.ndarray          # int64 chunk ids
    matrix: np.ndarray       # float32 (n, 384), unit rows

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.matrix.nbytes)

    def top(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        if not len(self.ids) or k <= 0:
            return []
        scores = self.matrix @ query
        if k < len(scores):
            picked = np.argpartition(-scores, k - 1)[:k]
            picked = picked[np.argsort(-scores[picked], kind="stable")]
        else:
            picked = np.argsort(-scores, kind="stable")
        return [(str(int(self.ids[i])), float(scores[i])) for i in picked]


class VectorIndex:
    def __init__(self, pool: asyncpg.Pool, model_id: str, max_bytes: int) -> None:
        self._pool = pool
        self.model_id = model_id
        self.max_bytes = max_bytes
        self._keys: OrderedDict[str, KeyVectors] = OrderedDict()
        self._loading: dict[str, asyncio.Task] = {}
        self.loads = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._keys.values())

    def loaded(self, key_id: str) -> KeyVectors | None:
        return self._keys.get(key_id)

    async def search(self, key_id: str, query: np.ndarray, k: int, version: int = 0) -> list[tuple[str, float]]:
        """The key's k nearest chunks to a unit query vector: [(chunk id, cosine)], best first. A
        version newer than the loaded one reloads the key first."""
        entry = await self.vectors(key_id, version)
        return entry.top(query, k)

    async def vectors(self, key_id: str, version: int = 0) -> KeyVectors:
        entry = self._keys.get(key_id)
        if entry is not None and entry.version >= version:
            self._keys.move_to_end(key_id)
            return entry
        task = self._loading.get(key_id)
        if task is None:        # one load per key at a time, whatever the concurrency
            task = asyncio.get_running_loop().create_task(self._load(key_id))
            self._loading[key_id] = task
            task.add_done_callback(lambda _: self._loading.pop(key_id, None))
        return await asyncio.shield(task)

    def forget(self, key_id: str, version: int = 0) -> bool:
        """Drops the key's vectors if they are older than `version` (0: always)."""
        entry = self._keys.get(key_id)
        if entry is None or (version and entry.version >= version):
            return False
        del self._keys[key_id]
        return True

    async def _load(self, key_id: str) -> KeyVectors:
        started = time.perf_counter()
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval("SELECT knowledge_version FROM product_keys WHERE id = $1", key_id)
            rows = await conn.fetch(_LOAD, key_id, self.model_id)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), DIMENSIONS)
        entry = KeyVectors(int(version or 0), ids, np.ascontiguousarray(matrix, dtype=np.float32))
        self._keys[key_id] = entry
        self._keys.move_to_end(key_id)
        self._evict(keep=key_id)
        self.loads += 1
        logger.info("vector index: loaded %s v%d (%d chunks, %.1f MB) in %.0f ms", key_id, entry.version,
                    len(ids), entry.nbytes / 1e6, (time.perf_counter() - started) * 1000)
        return entry

    def _evict(self, keep: str) -> None:
        total = self.nbytes
        while total > self.max_bytes and len(self._keys) > 1:
            oldest = next(iter(self._keys))
            if oldest == keep:
                self._keys.move_to_end(keep)
                continue
            total -= self._keys.pop(oldest).nbytes


class QueryEmbeddings:
    """Query vectors by message text (LRU): a repeated question is not embedded again."""

    def __init__(self, embed, max_entries: int = 10_000) -> None:
        self._embed = embed          # sync str -> np.ndarray, run in a worker thread
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    async def vector(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            self.hits += 1
            return cached
        self.misses += 1
        vector = await asyncio.to_thread(self._embed, text)
        self._cache[text] = vector
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return vector
