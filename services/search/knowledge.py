"""Knowledge of a product key: FAQ entries and chunked documents; every change bumps its version."""

from __future__ import annotations

import asyncpg

from services.common.chunking import chunk_text
from services.common.errors import InvalidArgument, NotFound
from services.common.knowledge_store import NewChunk, bump_version
from services.common.text import is_blank, storable
from services.search import keys
from services.search.indexing import Indexing
from services.search.urls import document_url_problem

MAX_QUESTION_CHARS = 1_000
MAX_ANSWER_CHARS = 10_000
MAX_DOCUMENT_CHARS = 2_000_000
# A document's title (or URL) names it: it is stored with every chunk and indexed, as an FAQ question is.
MAX_TITLE_CHARS = 1_000
MAX_URL_CHARS = 2_000
MAX_CHUNK_ID = 2**63 - 1        # knowledge_chunks.id is a bigint
# What names a document (an FAQ question; a document's URL, else its title) is a btree index key, which
# PostgreSQL limits to 2704 bytes with the key id and content hash: 1,000 characters outside ASCII can pass that.
MAX_DOCUMENT_NAME_BYTES = 2_000


def clean_text(what: str, text: str, limit: int, *, required: bool = True) -> str:
    """`text` as it is stored (through `storable`, stripped); INVALID_ARGUMENT when blank (if required)
    or longer than `limit` characters."""
    text = storable(text).strip()
    if is_blank(text):
        if required:
            raise InvalidArgument(f"{what} is empty")
        text = ""
    if len(text) > limit:
        raise InvalidArgument(f"{what} has {len(text)} characters; the limit is {limit}")
    return text


def check_document_name(what: str, name: str) -> None:
    size = len(name.encode())
    if size > MAX_DOCUMENT_NAME_BYTES:
        raise InvalidArgument(f"{what} takes {size} bytes in UTF-8; the limit is {MAX_DOCUMENT_NAME_BYTES} bytes")


async def add_faq(indexing: Indexing, key_id: str, question: str, answer: str) -> tuple[list[str], int]:
    question = clean_text("the FAQ question", question, MAX_QUESTION_CHARS)
    answer = clean_text("the FAQ answer", answer, MAX_ANSWER_CHARS)
    check_document_name("the FAQ question", question)
    await keys.require_live(indexing.pool, key_id)
    # The question names the entry: added again with another answer, the answer is replaced.
    ids, _, version = await indexing.write(key_id, "faq", question, "", "", [NewChunk(answer, question)],
                                           replace={question}, require=keys.require_live)
    return ids, version


async def add_document(indexing: Indexing, key_id: str, title: str, text: str, url: str = "") -> tuple[list[str], int]:
    title = clean_text("the document title", title, MAX_TITLE_CHARS, required=False)
    text = clean_text("the document", text, MAX_DOCUMENT_CHARS)
    url = clean_text("the document url", url, MAX_URL_CHARS, required=False)
    problem = document_url_problem(url)
    if problem:
        raise InvalidArgument(problem)
    document = url or title
    check_document_name("the document url" if url else "the document title", document)
    await keys.require_live(indexing.pool, key_id)
    chunks = chunk_text(text)
    # Its url (or title) names the document: added again (a file edited and `parley knowledge add` run
    # again), its new text replaces the old, which would otherwise stay beside it.
    ids, _, version = await indexing.write(key_id, "document", document, title, url, [NewChunk(c) for c in chunks],
                                           replace={document}, require=keys.require_live)
    return ids, version


async def delete_knowledge(pool: asyncpg.Pool, key_id: str, chunk_id: str = "", document: str = "") -> tuple[int, int]:
    """Deletes one chunk, or every chunk of a document (named as AddDocument stores it: through
    `storable`, stripped, so "  Shipping  " names the document added with that title), under the
    key row's lock as the writes take it (keys.require_live). Also of a revoked key: a deletion serves
    nothing to anyone, and is how its knowledge (personal data in a document, say) is removed."""
    if bool(chunk_id) == bool(document):
        raise InvalidArgument("give exactly one of chunk_id or document")
    if chunk_id and (not (chunk_id.isascii() and chunk_id.isdigit()) or int(chunk_id) > MAX_CHUNK_ID):
        raise InvalidArgument("chunk_id must be a number")
    if document:
        document = storable(document).strip()
        if is_blank(document):    # nothing of it could have been stored: it names no document (not the untitled ones)
            raise InvalidArgument("document is empty once control characters and surrounding spaces are removed")
    async with pool.acquire() as conn, conn.transaction():
        await keys.require_live(conn, key_id, revoked_too=True)
        if chunk_id:
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
