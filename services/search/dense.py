"""Dense candidates for Plan: the key's chunks nearest to the message by meaning, beside the lexical ones.

The query is embedded (cached per message text) in a worker thread while the lexical statement runs;
the nearest chunks come from the in-process `VectorIndex`. Lexical candidates get their cosine in
`Chunk.dense`; dense-only candidates are read from PostgreSQL and appended with no lexical score.
How the scores are weighed is the strategy's business, not this module's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable

import asyncpg

from services.common.embedding import Embedder
from services.search.retrieval import Chunk
from services.search.vector_index import QueryEmbeddings, VectorIndex

_CHUNKS = """
SELECT id, kind, document, title, question, content, url FROM knowledge_chunks
WHERE product_key_id = $1 AND id = ANY($2::bigint[])
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
        followed by the dense-only candidates, best first."""
        chunks, hits = await asyncio.gather(lexical, self.hits(key_id, version, message))
        return await self.merge(key_id, chunks, hits)

    async def merge(self, key_id: str, chunks: list[Chunk], hits: list[tuple[str, float]]) -> list[Chunk]:
        dense = dict(hits)
        merged = [dataclasses.replace(c, dense=dense.get(c.id, 0.0)) for c in chunks]
        have = {c.id for c in chunks}
        extra = [int(cid) for cid, _ in hits if cid not in have]
        if extra:
            rows = {str(r["id"]): r for r in await self._pool.fetch(_CHUNKS, key_id, extra)}
            for cid, score in hits:
                r = rows.get(cid)
                if r is not None:
                    merged.append(Chunk(id=cid, kind=r["kind"], title=r["title"], question=r["question"],
                                        content=r["content"], url=r["url"], score=0.0, document=r["document"],
                                        dense=score))
        return merged
