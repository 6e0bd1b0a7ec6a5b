"""Dense candidates for Plan: the key's chunks nearest to the message by meaning, beside the lexical ones.

The query is embedded (cached per message text) in a worker thread while the lexical statement runs;
the nearest chunks come from the in-process `VectorIndex`. Lexical candidates get their cosine in
`Chunk.dense`; dense-only candidates are read from PostgreSQL and appended with no lexical score.
How the scores are weighed is the strategy's business, not this module's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg

from services.common.embedding import Embedder
from services.search.retrieval import Chunk
from services.search.vector_index import QueryEmbeddings, VectorIndex

# By primary key, one probe per id, then the key checked on the row. (`id = ANY($2) AND product_key_id
# = $1` let PostgreSQL's generic plan, the one a prepared statement settles on, AND the primary key
# with the key's whole entry in the full-text GIN index: 50k entries read, ~8 ms, on a 50k-chunk key.)
_CHUNKS = """
SELECT ch.id, ch.kind, ch.document, ch.title, ch.question, ch.content, ch.url
FROM unnest($2::bigint[]) AS u(id) JOIN knowledge_chunks ch ON ch.id = u.id
WHERE ch.product_key_id = $1
"""


def single_threaded_blas() -> None:
    """numpy's BLAS on one thread in this process: a key's matrix-vector product is a few hundred
    microseconds of memory reads, and OpenBLAS's worker threads (which spin while they wait) made the
    same product cost several times the CPU on a busy machine."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class DenseRetrieval:
    def __init__(self, pool: asyncpg.Pool, embedder: Embedder, max_index_bytes: int, candidates: int = 20) -> None:
        single_threaded_blas()
        self._pool = pool
        self.index = VectorIndex(pool, embedder.model_id, max_index_bytes)
        self.queries = QueryEmbeddings(embedder.embed_one, key=embedder.query_key)
        self.candidates = candidates

    @classmethod
    async def load(cls, pool: asyncpg.Pool, max_index_bytes: int, candidates: int = 20) -> DenseRetrieval:
        return cls(pool, await asyncio.to_thread(Embedder.load), max_index_bytes, candidates)

    async def hits(self, key_id: str, version: int, message: str, k: int | None = None) -> list[tuple[str, float]]:
        vector = await self.queries.vector(message)
        return await self.index.search(key_id, vector, k or self.candidates, version)

    async def with_lexical(self, key_id: str, version: int, message: str,
                           lexical: Awaitable[list[Chunk]]) -> list[Chunk]:
        """The lexical candidates (awaited alongside the dense search) with their dense scores,
        followed by the dense-only candidates, best first. If the lexical statement is still running
        when the dense hits are known, the hits' rows are read meanwhile, so that the dense-only
        candidates cost no round trip after it."""
        lexical_task = asyncio.ensure_future(lexical)
        try:
            hits = await self.hits(key_id, version, message)
        except BaseException:
            lexical_task.cancel()
            raise
        if lexical_task.done() or not hits:
            return await self.merge(key_id, await lexical_task, hits)
        rows, chunks = await asyncio.gather(self._rows(key_id, [int(cid) for cid, _ in hits]), lexical_task)
        return self._merged(chunks, hits, rows)

    async def merge(self, key_id: str, chunks: list[Chunk], hits: list[tuple[str, float]]) -> list[Chunk]:
        have = {c.id for c in chunks}
        extra = [int(cid) for cid, _ in hits if cid not in have]
        return self._merged(chunks, hits, await self._rows(key_id, extra) if extra else {})

    async def _rows(self, key_id: str, ids: list[int]) -> dict[str, asyncpg.Record]:
        return {str(r["id"]): r for r in await self._pool.fetch(_CHUNKS, key_id, ids)}

    @staticmethod
    def _merged(chunks: list[Chunk], hits: list[tuple[str, float]], rows: dict[str, asyncpg.Record]) -> list[Chunk]:
        dense = dict(hits)
        merged = [c.with_scores(dense=dense.get(c.id, 0.0)) for c in chunks]
        have = {c.id for c in chunks}
        for cid, score in hits:
            r = rows.get(cid)
            if r is not None and cid not in have:
                merged.append(Chunk(id=cid, kind=r["kind"], title=r["title"], question=r["question"],
                                    content=r["content"], url=r["url"], score=0.0, document=r["document"],
                                    dense=score))
        return merged
