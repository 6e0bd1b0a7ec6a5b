"""Synthetic knowledge at scale (many keys, many chunks) for the index test and the search benchmark."""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg
import numpy as np

from services.common.embedding import DIMENSIONS, MODEL_ID
from services.search.keys import hash_secret

logger = logging.getLogger(__name__)

KEY_PREFIX = "synth-"
# Real support vocabulary mixed with pronounceable made-up words, drawn with a skewed
# (Zipf-like) distribution so that posting lists have realistic, uneven lengths.
_COMMON = (
    "account password reset email billing invoice plan storage upload download file folder share "
    "sync device desktop mobile app sign login security encryption backup restore trash delete "
    "refund payment card subscription cancel upgrade downgrade price month year user admin team "
    "support contact phone chat hours order delivery shipping return warranty repair store product "
    "size color stock discount coupon gift voucher address change update settings profile privacy "
    "data export import link invite permission viewer editor version history conflict offline network"
).split()
_SYLLABLES = "ka lo mi ra ve tu sen dor pa li qua zen bro fi nu tel gar mos ri chel".split()


def vocabulary(size: int = 4000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = list(_COMMON)
    seen = set(words)
    while len(words) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def key_id(i: int) -> str:
    return f"{KEY_PREFIX}{i:03d}"


def secret(i: int) -> str:
    """Deterministic secrets: synthetic keys are for load only and hold no real knowledge."""
    return f"pk_synthetic-load-key-{i:03d}"


# Every 20th chunk is an FAQ entry (a short question and its answer); the others are document chunks.
# They have no sentence vectors ('' rather than NULL, which would have the indexer embed them).
_INSERT_CHUNKS = """
INSERT INTO knowledge_chunks (product_key_id, kind, document, title, question, content, url, position, content_hash, tsv,
                              embedding_model, sentence_embeddings)
SELECT $1, CASE WHEN g % 20 = 0 THEN 'faq' ELSE 'document' END, 'doc-' || (g / 10),
       CASE WHEN g % 20 = 0 THEN '' ELSE 'Doc ' || (g / 10) END,
       CASE WHEN g % 20 = 0 THEN t.question ELSE '' END, t.content, '', g % 10,
       sha256(convert_to($1 || ':' || g, 'UTF8')),
       setweight(to_tsvector('english', CASE WHEN g % 20 = 0 THEN t.question ELSE 'Doc ' || (g / 10) END), 'A')
       || setweight(to_tsvector('english', t.content), 'B'), $4, ''::bytea
FROM generate_series($5::int, $2) AS g,
LATERAL (
    SELECT array_to_string(array(
        SELECT ($3::text[])[1 + floor(power(random(), 1.7) * cardinality($3::text[]))::int]
        FROM generate_series(1, 35 + (g % 25))
    ), ' ') AS content,
    'How do I ' || array_to_string(array(
        SELECT ($3::text[])[1 + floor(power(random(), 1.7) * cardinality($3::text[]))::int]
        FROM generate_series(1, 3 + (g % 5))
    ), ' ') || '?' AS question
) AS t
ON CONFLICT (product_key_id, kind, document, content_hash) DO NOTHING
"""


async def ensure_corpus(pool: asyncpg.Pool, *, keys: int = 100, chunks_per_key: int = 1000,
                        vectors: bool = True) -> int:
    """Creates keys synth-000.. with `chunks_per_key` chunks each unless they exist; returns the total
    chunk count of the synthetic keys. Idempotent, so a second run (or another test) reuses the data.
    `vectors=False` leaves the embeddings out (filled later by a call with `vectors=True`): writing
    them is an UPDATE of every row, which rewrites its GIN entries and takes minutes at 100k rows."""
    words = vocabulary()
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO product_keys (id, name, key_hash, settings) VALUES ($1, $2, $3, $4::jsonb)"
            " ON CONFLICT (id) DO NOTHING",
            [(key_id(i), f"Synthetic {i}", hash_secret(secret(i)),
              '{"rate_limit_per_second": 1000000, "rate_limit_burst": 1000000}') for i in range(keys)],
        )
        counts = dict(await conn.fetch(
            "SELECT product_key_id, count(*) FROM knowledge_chunks WHERE product_key_id LIKE $1 GROUP BY 1",
            KEY_PREFIX + "%",
        ))
        missing = [i for i in range(keys) if counts.get(key_id(i), 0) < chunks_per_key]
    if missing:
        logger.info("synthetic corpus: loading %d keys x %d chunks (once; later runs reuse it)", len(missing), chunks_per_key)
        queue = list(missing)

        async def loader() -> None:
            async with pool.acquire() as conn:
                while queue:
                    await conn.execute(_INSERT_CHUNKS, key_id(queue.pop()), chunks_per_key, words, MODEL_ID, 1)

        await asyncio.gather(*(loader() for _ in range(3)))
    if vectors:
        await ensure_vectors(pool, KEY_PREFIX + "%")
    async with pool.acquire() as conn:
        if missing:
            await conn.execute("ANALYZE knowledge_chunks")
        return await conn.fetchval(
            "SELECT count(*) FROM knowledge_chunks WHERE product_key_id LIKE $1 AND product_key_id <> $2",
            KEY_PREFIX + "%", KEY_PREFIX + "big"
        )


def sample_question(rng: random.Random, words: list[str] | None = None) -> str:
    words = words or vocabulary()
    picked = [words[min(len(words) - 1, int(rng.random() ** 1.7 * len(words)))] for _ in range(rng.randint(3, 8))]
    return "How do I " + " ".join(picked) + "?"


async def ensure_vectors(pool: asyncpg.Pool, key_pattern: str, batch: int = 1000) -> int:
    """Random unit vectors (as the current model's) for synthetic chunks that have none: dense search
    at scale is timed on them, without embedding 100k made-up passages."""
    rng = np.random.default_rng(11)
    filled = 0
    # A corpus made before sentence vectors existed: none for its chunks either (once).
    await pool.execute("UPDATE knowledge_chunks SET sentence_embeddings = '' WHERE product_key_id LIKE $1"
                       " AND sentence_embeddings IS NULL", key_pattern, timeout=600)
    # Random vectors stand for any model's: a corpus made under another model id (before the way sentence
    # vectors are made changed, say) is relabelled, not left for the indexer to embed 150k made-up passages.
    await pool.execute("UPDATE knowledge_chunks SET embedding_model = $2 WHERE product_key_id LIKE $1"
                       " AND embedding IS NOT NULL AND embedding_model IS DISTINCT FROM $2", key_pattern, MODEL_ID,
                       timeout=600)
    while True:
        ids = [r[0] for r in await pool.fetch(
            "SELECT id FROM knowledge_chunks WHERE product_key_id LIKE $1 AND embedding IS NULL LIMIT $2",
            key_pattern, batch)]
        if not ids:
            return filled
        vectors = rng.standard_normal((len(ids), DIMENSIONS), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await pool.execute(
            "UPDATE knowledge_chunks ch SET embedding = u.e, embedding_model = $3"
            " FROM unnest($1::bigint[], $2::bytea[]) AS u(id, e) WHERE ch.id = u.id",
            ids, [v.astype("<f4").tobytes() for v in vectors], MODEL_ID, timeout=300)
        filled += len(ids)
        logger.info("synthetic corpus: %d random vectors", filled)


async def ensure_big_key(pool: asyncpg.Pool, chunks: int = 50_000) -> str:
    """One synthetic key with `chunks` chunks (the largest key of the search benchmark)."""
    words = vocabulary()
    big = KEY_PREFIX + "big"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO product_keys (id, name, key_hash, settings) VALUES ($1, $2, $3, $4::jsonb)"
            " ON CONFLICT (id) DO NOTHING", big, "Synthetic big", hash_secret(big_secret()),
            '{"rate_limit_per_second": 1000000, "rate_limit_burst": 1000000}')
        have = await conn.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", big)
        if have < chunks:
            logger.info("synthetic corpus: loading %d chunks into %s (once)", chunks, big)
            for start in range(1, chunks + 1, 2000):    # in slices, with progress; resumable
                await conn.execute(_INSERT_CHUNKS, big, min(start + 1999, chunks), words, MODEL_ID, start,
                                   timeout=600)
                logger.info("synthetic corpus: %s has %d chunks", big, min(start + 1999, chunks))
            await conn.execute("ANALYZE knowledge_chunks")
    await ensure_vectors(pool, big)
    return big


def big_secret() -> str:
    return "pk_synthetic-load-key-big"
