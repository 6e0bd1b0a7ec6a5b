"""Retrieval: the key is validated and its knowledge searched in one PostgreSQL round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

# The message becomes an OR of its normalised lexemes (so extra words in a question do not
# exclude a passage), ranked by cover density. Building it from to_tsvector means tsquery
# operator characters in the message are plain text, never syntax.
PLAN_QUERY = """
WITH k AS (
    SELECT id, name, knowledge_version, instructions, website, ts_config
    FROM product_keys
    WHERE key_hash = $1 AND revoked_at IS NULL
), q AS (
    SELECT k.id AS key_id, nullif(array_to_string(array(
               SELECT quote_literal(replace(replace(lexeme, '\\', ''), '''', ''))
               FROM unnest(tsvector_to_array(to_tsvector(k.ts_config, $2))) AS lexeme
               WHERE replace(replace(lexeme, '\\', ''), '''', '') <> ''), ' | '), '')::tsquery AS query
    FROM k
)
SELECT k.id AS key_id, k.name, k.knowledge_version, k.instructions, k.website,
       c.id, c.kind, c.title, c.question, c.content, c.url, c.score
FROM k
LEFT JOIN q ON q.key_id = k.id
LEFT JOIN LATERAL (
    SELECT ch.id, ch.kind, ch.title, ch.question, ch.content, ch.url,
           ts_rank_cd(ch.tsv, q.query, 32) AS score
    FROM knowledge_chunks ch
    WHERE ch.product_key_id = k.id AND q.query IS NOT NULL AND ch.tsv @@ q.query
    ORDER BY score DESC, ch.id
    LIMIT $3
) c ON true
ORDER BY c.score DESC NULLS LAST, c.id
"""


@dataclass(frozen=True)
class Chunk:
    id: str
    kind: str
    title: str
    question: str
    content: str
    url: str
    score: float


@dataclass
class KeyContext:
    key_id: str
    name: str
    knowledge_version: int
    instructions: str
    website: str
    chunks: list[Chunk] = field(default_factory=list)


async def plan_lookup(pool: asyncpg.Pool, key_hash: bytes, message: str, limit: int) -> KeyContext | None:
    """The key's settings and its best chunks for the message; None when the key is unknown or revoked."""
    rows = await pool.fetch(PLAN_QUERY, key_hash, message, limit)
    if not rows:
        return None
    first = rows[0]
    ctx = KeyContext(
        key_id=first["key_id"],
        name=first["name"],
        knowledge_version=first["knowledge_version"],
        instructions=first["instructions"],
        website=first["website"],
    )
    for r in rows:
        if r["id"] is not None:
            ctx.chunks.append(
                Chunk(str(r["id"]), r["kind"], r["title"], r["question"], r["content"], r["url"], float(r["score"]))
            )
    return ctx
