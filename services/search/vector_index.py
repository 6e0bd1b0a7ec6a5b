"""Dense search within one key: an in-process index of the key's chunk embeddings.

The embeddings live in PostgreSQL beside their chunks (written by the indexing path); a replica
loads a key's matrix on the first search that needs it, with the knowledge version it was read at
(one snapshot). It is dropped when a `parley.knowledge.updated.v1` event announces a newer version,
and reloaded when a Plan sees a newer version on the key record, so every replica answers from the
same knowledge after a change. The loaded keys are bounded by bytes (least recently used go first).

Search is exact below IVF_MIN_VECTORS: one matrix-vector product over the key's unit vectors (cosine
similarity). A larger key is partitioned at load (an inverted file: k-means lists, a query scans the
lists of its nearest centroids), because an exact scan of a 50k-chunk key (77 MB, memory-bound) cost
~10 ms of CPU here, most of Plan's budget. Far larger keys would want a graph index (hnswlib or faiss
from PyPI, built at load from the same rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg
import numpy as np

from services.common.embedding import DIMENSIONS, readable_ids

logger = logging.getLogger(__name__)

# The key's knowledge version and its vectors in one statement, so from one snapshot: no transaction
# to open (a BEGIN ISOLATION LEVEL fails on a session left in a transaction its client does not know
# of, as seen after PostgreSQL was frozen or restarted), and one round trip instead of four. A key
# without vectors is one row of NULLs; an unknown key, no row. Vectors of the same model whose sentences
# older rules chose are read too (embedding.readable_ids), until the indexer has embedded them again.
_LOAD = """
SELECT k.knowledge_version, c.id, c.embedding, coalesce(c.sentence_embeddings, '')
FROM product_keys k
LEFT JOIN knowledge_chunks c
  ON c.product_key_id = k.id AND c.embedding_model = ANY($2::text[]) AND c.embedding IS NOT NULL
WHERE k.id = $1
"""


# Keys with more vectors than this are partitioned (IVF): the rows are grouped by their nearest of
# ~sqrt(n) centroids (k-means at load), and a query scans only the lists of its PROBE nearest
# centroids. A 50k-chunk key then scans ~7% of its matrix instead of all 77 MB.
IVF_MIN_VECTORS = 20_000
PROBE = 16
# A chunk's score is the mean of its passage cosine and its best sentence cosine (the passage's
# quotable sentences, each embedded with its page title and heading: services/common/sentences.py).
# On the dev split of the help-site evaluation this moved page hit@1 from 0.67 to 0.73 and hit@3 from
# 0.87 to 0.91 over the passage vector alone; taking the max instead of the mean gained nothing, the
# sentences alone lost. Sentences are scored for the SHORTLIST best passages only: the same dev
# outcome as scoring every sentence, at a bounded cost on large keys.
SHORTLIST = 50
SENTENCE_WEIGHT = 0.5
# Sentence vectors are held in half precision (cosines within ~1e-3 of float32's).


@dataclass
class KeyVectors:
    version: int
    ids: np.ndarray          # int64 chunk ids
    matrix: np.ndarray       # float32 (n, 384), unit rows (grouped by list when partitioned)
    centroids: np.ndarray | None = None   # (lists, 384)
    bounds: np.ndarray | None = None      # list i is rows bounds[i]:bounds[i + 1]
    sentences: np.ndarray | None = None   # float16 (m, 384): the sentence vectors of every chunk
    starts: np.ndarray | None = None      # row i's sentences are sentences[starts[i]:starts[i + 1]]

    @property
    def nbytes(self) -> int:
        extra = self.centroids.nbytes + self.bounds.nbytes if self.centroids is not None else 0
        if self.sentences is not None:
            extra += self.sentences.nbytes + self.starts.nbytes
        return int(self.ids.nbytes + self.matrix.nbytes + extra)

    def top(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k best chunks: [(chunk id, score)], the score the mean of the passage cosine and the best
        sentence cosine (the passage cosine alone for a chunk without sentences)."""
        if not len(self.ids) or k <= 0:
            return []
        rows, scores = self._scores(query)
        short = max(k, SHORTLIST) if self.sentences is not None else k
        if short < len(scores):
            picked = np.argpartition(-scores, short - 1)[:short]
        else:
            picked = np.arange(len(scores))
        at = picked if rows is None else rows[picked]
        mixed = self._with_sentences(at, scores[picked], query)
        order = np.argsort(-mixed, kind="stable")[:k]
        return [(str(int(self.ids[at[i]])), float(mixed[i])) for i in order]

    def _with_sentences(self, at: np.ndarray, scores: np.ndarray, query: np.ndarray) -> np.ndarray:
        if self.sentences is None or not len(self.sentences):
            return scores
        first, last = self.starts[at], self.starts[at + 1]
        has = last > first
        if not has.any():
            return scores
        spans = [np.arange(a, b) for a, b in zip(first[has], last[has])]
        sims = self.sentences[np.concatenate(spans)].astype(np.float32) @ query
        offsets = np.cumsum([0] + [len(s) for s in spans[:-1]])
        best = scores.copy()
        best[has] = np.maximum.reduceat(sims, offsets)
        return (1 - SENTENCE_WEIGHT) * scores + SENTENCE_WEIGHT * best

    def _scores(self, query: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(row numbers or None for all rows, their scores). A probed list is a contiguous slice of
        the matrix: scored in place, never gathered into a copy (the copy cost more than the product)."""
        if self.centroids is None:
            return None, self.matrix @ query
        nearest = np.argpartition(-(self.centroids @ query), min(PROBE, len(self.centroids)) - 1)[:PROBE]
        spans = [(int(self.bounds[c]), int(self.bounds[c + 1])) for c in nearest]
        rows = np.concatenate([np.arange(a, b) for a, b in spans])
        scores = np.empty(len(rows), dtype=np.float32)
        at = 0
        for a, b in spans:
            np.matmul(self.matrix[a:b], query, out=scores[at:at + b - a])
            at += b - a
        return rows, scores

    @classmethod
    def build(cls, version: int, ids: np.ndarray, matrix: np.ndarray,
              sentences: list[np.ndarray] | None = None) -> KeyVectors:
        """Exact below IVF_MIN_VECTORS; partitioned above (spherical k-means on a sample, 6 rounds).
        `sentences`: each chunk's sentence vectors (k, 384), in the order of `ids`."""
        if len(ids) < IVF_MIN_VECTORS:
            return cls(version, ids, matrix).with_sentences(sentences)
        rng = np.random.default_rng(0)
        lists = int(np.sqrt(len(ids)))
        sample = matrix[rng.choice(len(ids), min(len(ids), 40 * lists), replace=False)]
        centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
        for _ in range(6):
            assign = np.argmax(sample @ centroids.T, axis=1)
            for c in range(lists):
                members = sample[assign == c]
                if len(members):
                    centroids[c] = members.sum(axis=0)
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        assign = np.concatenate([np.argmax(matrix[i:i + 8192] @ centroids.T, axis=1)
                                 for i in range(0, len(ids), 8192)])
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(lists + 1)).astype(np.int64)
        entry = cls(version, ids[order], np.ascontiguousarray(matrix[order]), centroids.astype(np.float32), bounds)
        return entry.with_sentences([sentences[i] for i in order] if sentences is not None else None)

    def with_sentences(self, sentences: list[np.ndarray] | None) -> KeyVectors:
        """The chunks' sentence vectors (in row order) packed into one matrix with row offsets."""
        if sentences is None or not any(len(s) for s in sentences):
            return self
        self.starts = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
        # Half precision: a chunk has ~4 sentences, so they would outweigh the passages' matrix four
        # times over; only the shortlist's few hundred rows are read, converted, per query.
        self.sentences = np.ascontiguousarray(np.concatenate([s for s in sentences if len(s)]), dtype=np.float16)
        return self


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
        entry = await asyncio.shield(self._load_under_way(key_id))
        if entry.version < version:
            # The load joined took its snapshot before `version` committed (it was under way when the
            # change came). `version` was read from PostgreSQL before this call, so a load started
            # after that one ended reads it: without this, the chunks the change added or replaced
            # would be missing from dense results answered (and cached) under the new version.
            entry = await asyncio.shield(self._load_under_way(key_id))
        return entry

    def _load_under_way(self, key_id: str) -> asyncio.Task:
        """The key's load in flight, or a new one: one load per key at a time, whatever the concurrency."""
        task = self._loading.get(key_id)
        if task is None or task.done():
            task = self._loading[key_id] = asyncio.get_running_loop().create_task(self._load(key_id))
            task.add_done_callback(lambda done: self._loading.get(key_id) is done and self._loading.pop(key_id))
        return task

    def forget(self, key_id: str, version: int = 0) -> bool:
        """Drops the key's vectors if they are older than `version` (0: always)."""
        entry = self._keys.get(key_id)
        if entry is None or (version and entry.version >= version):
            return False
        del self._keys[key_id]
        return True

    async def _load(self, key_id: str) -> KeyVectors:
        started = time.perf_counter()
        rows = await self._pool.fetch(_LOAD, key_id, readable_ids(self.model_id))
        version = rows[0][0] if rows else 0
        if rows and rows[0][1] is None:
            rows = []           # the key's one row of NULLs: no vectors
        ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), DIMENSIONS)
        sentences = [np.frombuffer(r[3], dtype="<f4").reshape(-1, DIMENSIONS) for r in rows]
        entry = await asyncio.to_thread(KeyVectors.build, int(version or 0), ids,
                                        np.ascontiguousarray(matrix, dtype=np.float32), sentences)
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
    """Query vectors by message (LRU): a repeated question is not embedded again, and one being embedded
    is awaited rather than embedded a second time (Plan may start a message's embedding before its key
    is validated, and then ask for it). `key` maps a message to its cache key (by default the text
    itself; the embedder's normalised text, so that questions differing only in case, accents or
    spacing share an entry)."""

    def __init__(self, embed, max_entries: int = 10_000, key=None) -> None:
        self._embed = embed          # sync str -> np.ndarray, run in a worker thread
        self._key_of = key or (lambda text: text)
        self._last: tuple[str, str] = ("", "")     # (text, key): Plan asks start() then vector()
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, asyncio.Future] = {}
        self.hits = self.misses = 0

    def start(self, text: str) -> None:
        """Starts embedding a message, unless its vector is cached or under way, without waiting."""
        key = self._key(text)
        if key not in self._cache and key not in self._pending:
            self._begin(key, text)

    async def vector(self, text: str) -> np.ndarray:
        key = self._key(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        pending = self._pending.get(key) or self._begin(key, text)
        return await asyncio.shield(pending)

    def _key(self, text: str) -> str:
        if self._last[0] != text:
            self._last = (text, self._key_of(text))
        return self._last[1]

    def _begin(self, key: str, text: str) -> asyncio.Future:
        self.misses += 1
        # Handed to the worker thread now (not by a task on the loop's next turn), so it runs while
        # the caller goes on to send its statements.
        pending = self._pending[key] = asyncio.get_running_loop().run_in_executor(None, self._embed, text)
        pending.add_done_callback(lambda done: self._store(key, done))
        return pending

    def _store(self, key: str, done: asyncio.Future) -> None:
        self._pending.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        self._cache[key] = done.result()
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
