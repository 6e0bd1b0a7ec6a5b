"""Writing a key's knowledge chunks, with their embeddings: used by the search service's indexing
path only (admin RPCs, `parley knowledge add`, and the indexer that takes the scraper's pages).

Every change bumps the key's knowledge version (which invalidates answer caches keyed by it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.common.chunking import content_hash
from services.common.errors import NotFound
from services.common.sentences import embedding_sentences, sentence_spans

VECTOR_BYTES = 384 * 4      # one float32 embedding (services/common/embedding.py DIMENSIONS)

# tsv is computed with the key's own text-search configuration; the title (or FAQ question)
# weighs more than the body. A chunk is unique within its document (migration 0004): the same
# paragraph on two pages is stored for each. The embeddings of a chunk come as one byte string: the
# passage's vector, then its sentences' vectors (see `split_vectors`); they are stored apart.
_INSERT = """
INSERT INTO knowledge_chunks (product_key_id, kind, document, title, question, content, url, position, content_hash,
                              tsv, embedding, sentence_embeddings, embedding_model)
SELECT $1, $2, $3, $4, q, c, $5, pos, h,
       setweight(to_tsvector(k.ts_config, $4 || ' ' || q), 'A') || setweight(to_tsvector(k.ts_config, c), 'B'),
       substring(e FROM 1 FOR $12), substring(e FROM $12 + 1), $11
FROM product_keys k,
     unnest($6::text[], $7::text[], $8::int[], $9::bytea[], $10::bytea[]) AS u(q, c, pos, h, e)
WHERE k.id = $1
ON CONFLICT (product_key_id, kind, document, content_hash) DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class NewChunk:
    content: str
    question: str = ""      # FAQ entries only

    def hash(self, kind: str) -> bytes:
        return content_hash(kind, self.question, self.content)

    def embedding_text(self, title: str) -> str:
        """What the embedding reads: the FAQ question with its answer, or the title with the passage."""
        head = self.question or title
        return f"{head}\n{self.content}" if head else self.content

    def sentence_texts(self, kind: str, title: str) -> list[str]:
        """What the chunk's sentence vectors read (none for an FAQ entry: its question is the match)."""
        return [] if kind == "faq" else embedding_sentences(title, self.content)

    def sentence_spans(self, kind: str, title: str) -> list[list[tuple[int, int]] | None]:
        """Where those sentences stand in `embedding_text(title)` (character ranges; None: not found)."""
        return [] if kind == "faq" else sentence_spans(self.embedding_text(title), self.content)


def split_vectors(vectors: bytes) -> tuple[bytes, bytes]:
    """A chunk's embeddings as the indexing path carries them: (passage vector, its sentence vectors)."""
    return vectors[:VECTOR_BYTES], vectors[VECTOR_BYTES:]


async def bump_version(conn: asyncpg.Connection, key_id: str) -> int:
    version = await conn.fetchval(
        "UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = $1 RETURNING knowledge_version",
        key_id,
    )
    if version is None:
        raise NotFound(f"no product key with id {key_id!r}")
    return version


async def insert_chunks(
    conn: asyncpg.Connection, key_id: str, kind: str, document: str, title: str, url: str,
    chunks: Sequence[NewChunk], embeddings: Sequence[bytes | None] | None = None, model_id: str | None = None,
) -> list[str]:
    """One statement for all chunks of a document; a chunk the document has already is skipped."""
    vectors = list(embeddings) if embeddings is not None else [None] * len(chunks)
    rows = await conn.fetch(
        _INSERT, key_id, kind, document, title, url,
        [c.question for c in chunks], [c.content for c in chunks], list(range(len(chunks))),
        [c.hash(kind) for c in chunks], vectors, model_id, VECTOR_BYTES,
    )
    return [str(r["id"]) for r in rows]


async def known_embeddings(conn: asyncpg.Pool | asyncpg.Connection, key_id: str, hashes: Sequence[bytes],
                           model_id: str) -> dict[bytes, bytes]:
    """Embeddings the key already has for these contents (by the same model), the passage's vector
    followed by its sentences' ones: a changed page's unchanged paragraphs, or a paragraph shared with
    another page, are not embedded again."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (content_hash) content_hash, embedding || sentence_embeddings AS embedding"
        " FROM knowledge_chunks WHERE product_key_id = $1 AND content_hash = ANY($2::bytea[])"
        " AND embedding_model = $3 AND embedding IS NOT NULL AND sentence_embeddings IS NOT NULL",
        key_id, list(hashes), model_id,
    )
    return {bytes(r["content_hash"]): bytes(r["embedding"]) for r in rows}


async def delete_documents(conn: asyncpg.Connection, key_id: str, kind: str, documents: set[str]) -> int:
    if not documents:
        return 0
    result = await conn.execute(
        "DELETE FROM knowledge_chunks WHERE product_key_id = $1 AND kind = $2 AND document = ANY($3::text[])",
        key_id, kind, list(documents),
    )
    return int(result.split()[-1])
