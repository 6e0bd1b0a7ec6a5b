"""The one indexing path of knowledge, owned by the search service.

Admin RPCs (and so `parley knowledge add`) and the indexer worker that takes the scraper's pages all
write through `Indexing`: chunks are embedded in batches off the event loop (a paragraph the key
already has an embedding for is not embedded again), then written with their embeddings, the
replaced chunks deleted and the knowledge version bumped in one transaction. Writing a document is
idempotent: replaying it gives the same chunks. What is stored (and embedded) goes through
`services.common.text.storable` here, whichever path it came by; a chunk blank after that is dropped."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from services.common.embedding import Embedder
from services.common.knowledge_store import (
    VECTOR_BYTES,
    NewChunk,
    bump_version,
    delete_documents,
    insert_chunks,
    known_embeddings,
)
from services.common.text import is_blank, storable

logger = logging.getLogger(__name__)

EMBED_BATCH = 16      # texts per model call: activations of 16 passages stay in cache (64 cost ~15% more CPU a chunk)
# A revoked key's chunks are never searched again: not embedded again either (a model change would
# spend the indexer's start on every former tenant's knowledge).
_STALE = """
SELECT c.id, c.product_key_id, c.kind, c.title, c.question, c.content FROM knowledge_chunks c
JOIN product_keys k ON k.id = c.product_key_id AND k.revoked_at IS NULL
WHERE (c.embedding_model IS DISTINCT FROM $1 OR c.sentence_embeddings IS NULL) AND c.id > $2
ORDER BY c.id LIMIT $3
"""
_SET_EMBEDDINGS = """
UPDATE knowledge_chunks ch SET embedding = substring(u.e FROM 1 FOR $4), sentence_embeddings = substring(u.e FROM $4 + 1),
                               embedding_model = $3
FROM unnest($1::bigint[], $2::bytea[]) AS u(id, e) WHERE ch.id = u.id
"""


@dataclass(frozen=True)
class Document:
    """A document's chunks to embed: the key, the kind of knowledge, and the title that prefixes them."""
    key_id: str
    kind: str
    title: str
    chunks: Sequence[NewChunk]


def storable_chunks(chunks: Sequence[NewChunk]) -> list[NewChunk]:
    """The chunks as they are stored: their text through `storable`, and none that is blank after it."""
    cleaned = []
    for c in chunks:
        content, question = storable(c.content), storable(c.question)
        if not is_blank(content):
            cleaned.append(c if content is c.content and question is c.question else NewChunk(content, question))
    return cleaned


_VERSION = "SELECT knowledge_version FROM product_keys WHERE id = $1"
_STORED = """
SELECT id, content_hash, title, url FROM knowledge_chunks WHERE product_key_id = $1 AND kind = $2 AND document = $3
ORDER BY position, id
"""
_IDS = """
SELECT c.id FROM unnest($4::bytea[]) WITH ORDINALITY AS u(h, n)
JOIN knowledge_chunks c ON c.product_key_id = $1 AND c.kind = $2 AND c.document = $3 AND c.content_hash = u.h
ORDER BY u.n
"""


async def _unchanged(conn: asyncpg.Connection, key_id: str, kind: str, document: str, title: str, url: str,
                     chunks: Sequence[NewChunk]) -> list[str] | None:
    """The ids of the document's stored chunks when they are these chunks, in this order, under this
    title and url (the title is embedded with each passage); else None."""
    rows = await conn.fetch(_STORED, key_id, kind, document)
    if [r["content_hash"] for r in rows] != list(dict.fromkeys(c.hash(kind) for c in chunks)):
        return None
    if any(r["title"] != title or r["url"] != url for r in rows):
        return None
    return [str(r["id"]) for r in rows]


async def _ids_of(conn: asyncpg.Connection, key_id: str, kind: str, document: str,
                  chunks: Sequence[NewChunk]) -> list[str]:
    """The ids of a document's chunks, in the chunks' order (those written before included)."""
    hashes = list(dict.fromkeys(c.hash(kind) for c in chunks))
    return [str(r["id"]) for r in await conn.fetch(_IDS, key_id, kind, document, hashes)]


def _stored_names(documents: set[str] | frozenset[str]) -> set[str]:
    """Documents to delete by name, as they were stored (through `storable`), without the empty name."""
    return {storable(d) for d in documents} - {""}


def to_bytes(vectors: np.ndarray) -> list[bytes]:
    return [row.astype("<f4", copy=False).tobytes() for row in vectors]


@dataclass(frozen=True)
class ChunkText:
    """What one chunk's embeddings read: the passage; its sentences as they read on their own (encoded
    apart by default); and their places in the passage (with the embedder's sentences "in-passage",
    their vectors are pooled from the passage's encoding, and only a sentence not found in the passage
    or past its truncation is encoded apart)."""
    passage: str
    sentences: list[str]
    chunk: NewChunk
    kind: str
    title: str

    @classmethod
    def of(cls, chunk: NewChunk, kind: str, title: str) -> ChunkText:
        return cls(chunk.embedding_text(title), chunk.sentence_texts(kind, title), chunk, kind, title)

    @functools.cached_property
    def spans(self) -> list[list[tuple[int, int]] | None]:
        """Found only when asked for: the default path never reads them."""
        return self.chunk.sentence_spans(self.kind, self.title)


class Indexing:
    def __init__(self, pool: asyncpg.Pool, load_embedder: Callable[[], Embedder] = Embedder.load) -> None:
        self._pool = pool
        self._load = load_embedder
        self.chunks_embedded = 0

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def embedder(self) -> Embedder:
        return await asyncio.to_thread(self._load)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of texts, in a worker thread (numpy releases the GIL in its matrix products)."""
        embedder = await self.embedder()
        return await asyncio.to_thread(embedder.embed, list(texts), EMBED_BATCH)

    async def embeddings(self, key_id: str, kind: str, title: str, chunks: Sequence[NewChunk]
                         ) -> tuple[list[bytes], str]:
        (vectors,), model_id = await self.embeddings_of([Document(key_id, kind, title, chunks)])
        return vectors, model_id

    async def embeddings_of(self, documents: Sequence[Document]) -> tuple[list[list[bytes]], str]:
        """The embeddings of several documents' chunks, with one model call for all the chunks not
        embedded yet (the indexer batches pages this way: a model call on a few chunks wastes most of
        its time on overhead and padding)."""
        embedder = await self.embedder()
        documents = [Document(d.key_id, d.kind, storable(d.title), storable_chunks(d.chunks)) for d in documents]
        known: dict[tuple[str, bytes], bytes] = {}
        hashes = [[c.hash(d.kind) for c in d.chunks] for d in documents]
        for key_id in dict.fromkeys(d.key_id for d in documents):
            wanted = [h for d, hs in zip(documents, hashes) if d.key_id == key_id for h in hs]
            found = await known_embeddings(self._pool, key_id, wanted, embedder.model_id)
            known.update(((key_id, h), e) for h, e in found.items())
        missing: dict[tuple[str, bytes], ChunkText] = {}   # one embedding per (key, content) in the call
        for d, hs in zip(documents, hashes):
            for c, h in zip(d.chunks, hs):
                if (d.key_id, h) not in known:
                    missing.setdefault((d.key_id, h), ChunkText.of(c, d.kind, d.title))
        if missing:
            known.update(zip(missing, await self._embed_chunks(list(missing.values()))))
        return [[known[(d.key_id, h)] for h in hs] for d, hs in zip(documents, hashes)], embedder.model_id

    async def _embed_chunks(self, texts: list[ChunkText]) -> list[bytes]:
        """Each chunk's vectors (passage, then sentences) as one byte string. By default the passage and
        each sentence are encoded apart, all in one model call; with the embedder's sentences
        "in-passage", one encoder run per passage, its sentence vectors pooled from it, and the few
        sentences not found there encoded apart."""
        embedder = await self.embedder()
        if embedder.sentences == "apart":
            vectors = await self.embed([x for t in texts for x in (t.passage, *t.sentences)])
            self.chunks_embedded += len(texts)
            out, at = [], 0
            for t in texts:
                out.append(b"".join(to_bytes(vectors[at:at + 1 + len(t.sentences)])))
                at += 1 + len(t.sentences)
            return out
        passages, sentences = await asyncio.to_thread(
            embedder.embed_spans, [t.passage for t in texts], [[r or [] for r in t.spans] for t in texts], EMBED_BATCH)
        alone = [(i, j) for i, t in enumerate(texts) for j, r in enumerate(t.spans)
                 if not r or np.isnan(sentences[i][j, 0])]
        if alone:
            vectors = await self.embed([texts[i].sentences[j] for i, j in alone])
            for (i, j), v in zip(alone, vectors):
                sentences[i][j] = v
        self.chunks_embedded += len(texts)
        return [b"".join(to_bytes(np.vstack([p[None], s]))) for p, s in zip(passages, sentences)]

    async def write(self, key_id: str, kind: str, document: str, title: str, url: str, chunks: Sequence[NewChunk],
                    replace: set[str] | frozenset[str] = frozenset(), vectors: list[bytes] | None = None,
                    require: Callable[[asyncpg.Connection, str], Awaitable[None]] | None = None,
                    ) -> tuple[list[str], int, int]:
        """Writes a document's chunks (first deleting the chunks of the `replace` documents of the same
        kind): (the chunks' ids, chunks deleted, knowledge version). A chunk the document holds already
        (an admin's AddFaq sent again after a lost reply) keeps its id, and a write that changes nothing
        leaves the version as it was (the key's answer caches stay). `vectors`: the chunks' embeddings if
        the caller has them already (from `embeddings_of`, which stores what this stores, in order).
        `require`: a check of the key run first in the write's transaction (it may raise)."""
        document, title, url = storable(document), storable(title), storable(url)
        chunks = storable_chunks(chunks)
        if vectors is None or len(vectors) != len(chunks):
            vectors, model_id = await self.embeddings(key_id, kind, title, chunks)
        else:
            model_id = (await self.embedder()).model_id
        async with self._pool.acquire() as conn, conn.transaction():
            if require is not None:
                await require(conn, key_id)
            if _stored_names(replace) == {document} and chunks:
                same = await _unchanged(conn, key_id, kind, document, title, url, chunks)
                if same is not None:
                    return same, 0, await conn.fetchval(_VERSION, key_id)
            deleted = await delete_documents(conn, key_id, kind, _stored_names(replace))
            ids = await insert_chunks(conn, key_id, kind, document, title, url, chunks, vectors, model_id)
            if ids or deleted or not chunks:
                version = await bump_version(conn, key_id)
            else:
                version = await conn.fetchval(_VERSION, key_id)
            if len(ids) < len(chunks):
                ids = await _ids_of(conn, key_id, kind, document, chunks)
        return ids, deleted, version

    async def remove(self, key_id: str, kind: str, documents: set[str],
                     require: Callable[[asyncpg.Connection, str], Awaitable[None]] | None = None,
                     ) -> tuple[int, int]:
        """Deletes documents' chunks: (chunks deleted, knowledge version); `require` as for write."""
        async with self._pool.acquire() as conn, conn.transaction():
            if require is not None:
                await require(conn, key_id)
            deleted = await delete_documents(conn, key_id, kind, _stored_names(documents))
            version = await bump_version(conn, key_id)
        return deleted, version

    async def reembed_stale(self, batch: int = 256) -> dict[str, int]:
        """Embeds every chunk without an embedding of the current model (chunks written before dense
        retrieval, or by another model) or without sentence embeddings (written before those); each batch
        bumps the versions of its keys in the transaction that stores its vectors, so that the search
        replicas reload them also when a later batch fails. Returns {key id: last version}. Idempotent
        and resumable."""
        embedder = await self.embedder()
        versions: dict[str, int] = {}
        last_id, total, started = 0, 0, time.monotonic()
        while True:
            rows = await self._pool.fetch(_STALE, embedder.model_id, last_id, batch)
            if not rows:
                break
            texts = [ChunkText.of(NewChunk(r["content"], r["question"]), r["kind"], r["title"]) for r in rows]
            vectors = await self._embed_chunks(texts)
            async with self._pool.acquire() as conn, conn.transaction():
                # The keys' rows first, in order, as every writer of a key's knowledge takes them.
                for key_id in sorted({r["product_key_id"] for r in rows}):
                    versions[key_id] = await bump_version(conn, key_id)
                await conn.execute(_SET_EMBEDDINGS, [r["id"] for r in rows], vectors, embedder.model_id,
                                   VECTOR_BYTES)
            last_id, total = rows[-1]["id"], total + len(rows)
            logger.info("re-embedded %d chunks (%.0f/s)", total, total / max(time.monotonic() - started, 1e-6))
        return versions
