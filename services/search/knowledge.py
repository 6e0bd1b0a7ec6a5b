"""Knowledge of a product key: FAQ entries and chunked documents; every change bumps its version."""

from __future__ import annotations

import asyncpg

from services.common.chunking import chunk_text, content_hash
from services.common.errors import InvalidArgument, NotFound

MAX_DOCUMENT_CHARS = 2_000_000

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


async def _bump(conn: asyncpg.Connection, key_id: str) -> int:
    version = await conn.fetchval(
        "UPDATE product_keys SET knowledge_version = knowledge_version + 1 WHERE id = $1 RETURNING knowledge_version",
        key_id,
    )
    if version is None:
        raise NotFound(f"no product key with id {key_id!r}")
    return version


async def add_faq(pool: asyncpg.Pool, key_id: str, question: str, answer: str) -> tuple[list[str], int]:
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise InvalidArgument("an FAQ entry needs both a question and an answer")
    async with pool.acquire() as conn, conn.transaction():
        version = await _bump(conn, key_id)
        rows = await conn.fetch(
            _INSERT, key_id, "faq", question, "", "", [question], [answer], [0], [content_hash("faq", question, answer)]
        )
    return [str(r["id"]) for r in rows], version


async def add_document(pool: asyncpg.Pool, key_id: str, title: str, text: str, url: str = "") -> tuple[list[str], int]:
    title = title.strip()
    if not text.strip():
        raise InvalidArgument("the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidArgument(f"the document has {len(text)} characters; the limit is {MAX_DOCUMENT_CHARS}")
    chunks = chunk_text(text)
    document = url or title
    async with pool.acquire() as conn, conn.transaction():
        version = await _bump(conn, key_id)
        rows = await conn.fetch(
            _INSERT, key_id, "document", document, title, url,
            [""] * len(chunks), chunks, list(range(len(chunks))), [content_hash("document", c) for c in chunks],
        )
    return [str(r["id"]) for r in rows], version


async def delete_knowledge(pool: asyncpg.Pool, key_id: str, chunk_id: str = "", document: str = "") -> tuple[int, int]:
    if bool(chunk_id) == bool(document):
        raise InvalidArgument("give exactly one of chunk_id or document")
    async with pool.acquire() as conn, conn.transaction():
        if chunk_id:
            if not chunk_id.isdigit():
                raise InvalidArgument("chunk_id must be a number")
            result = await conn.execute(
                "DELETE FROM knowledge_chunks WHERE product_key_id = $1 AND id = $2", key_id, int(chunk_id)
            )
        else:
            result = await conn.execute(
                "DELETE FROM knowledge_chunks WHERE product_key_id = $1 AND document = $2", key_id, document
            )
        deleted = int(result.split()[-1])
        if deleted == 0:
            raise NotFound("nothing matched")
        version = await _bump(conn, key_id)
    return deleted, version
