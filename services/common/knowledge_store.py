"""Writing a key's knowledge chunks: shared by the search admin RPCs and the scraper.

Every change bumps the key's knowledge version (which invalidates answer caches keyed by it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.common.chunking import content_hash
from services.common.errors import NotFound

# tsv is computed with the key's own text-search configuration; the title (or FAQ question)
# weighs more than the body.
_INSERT = """
INSERT INTO knowledge_chunks (product_key_id, kind, document, title, question, content, url, position, content_hash, tsv)
SELECT $1, $2, $3, $4, q, c, $5, pos, h,
       setweight(to_tsvector(k.ts_config, $4 || ' ' || q), 'A') || setweight(to_tsvector(k.ts_config, c), 'B')
FROM product_keys k,
     unnest($6::text[], $7::text[], $8::int[], $9::bytea[]) AS u(q, c, pos, h)
WHERE k.id = $1
ON CONFLICT (product_key_id, content_hash) DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class NewChunk:
    content: str
    question: str = ""      # FAQ entries only


async def bump_version(conn: asyncpg.Connection, key_id: str) -> int:
    version = await conn.fetchval(
        "UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = $1 RETURNING knowledge_version",
        key_id,
    )
    if version is None:
        raise NotFound(f"no product key with id {key_id!r}")
    return version


async def insert_chunks(
    conn: asyncpg.Connection, key_id: str, kind: str, document: str, title: str, url: str, chunks: Sequence[NewChunk]
) -> list[str]:
    """One statement for all chunks of a document; a chunk whose content the key has already is skipped."""
    rows = await conn.fetch(
        _INSERT, key_id, kind, document, title, url,
        [c.question for c in chunks], [c.content for c in chunks], list(range(len(chunks))),
        [content_hash(kind, c.question, c.content) for c in chunks],
    )
    return [str(r["id"]) for r in rows]
