"""Knowledge of a product key: FAQ entries and chunked documents; every change bumps its version."""

from __future__ import annotations

import asyncpg

from services.common.chunking import chunk_text
from services.common.errors import InvalidArgument, NotFound
from services.common.knowledge_store import NewChunk, bump_version
from services.search.indexing import Indexing

MAX_DOCUMENT_CHARS = 2_000_000

async def add_faq(indexing: Indexing, key_id: str, question: str, answer: str) -> tuple[list[str], int]:
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise InvalidArgument("an FAQ entry needs both a question and an answer")
    ids, _, version = await indexing.write(key_id, "faq", question, "", "", [NewChunk(answer, question)])
    return ids, version


async def add_document(indexing: Indexing, key_id: str, title: str, text: str, url: str = "") -> tuple[list[str], int]:
    title = title.strip()
    if not text.strip():
        raise InvalidArgument("the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidArgument(f"the document has {len(text)} characters; the limit is {MAX_DOCUMENT_CHARS}")
    chunks = chunk_text(text)
    document = url or title
    ids, _, version = await indexing.write(key_id, "document", document, title, url, [NewChunk(c) for c in chunks])
    return ids, version


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
        version = await bump_version(conn, key_id)
    return deleted, version
