"""Synthetic knowledge at scale (many keys, many chunks) for the index test and the search benchmark."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import secrets

import asyncpg
import numpy as np

from services.common.embedding import DIMENSIONS, MODEL_ID
from services.common.product_keys import KeyCache, key_change
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


# The synthetic keys never limit a load (a million calls a second), in whatever database is configured,
# so their secrets are this process's own: drawn at random when it starts, and each load sets the keys'
# hashes to them. A later run (or another process) rotates them again; nobody else can use them.
_SEED = secrets.token_bytes(32)
_SETTINGS = '{"rate_limit_per_second": 1000000, "rate_limit_burst": 1000000}'


def _secret(name: str) -> str:
    digest = hmac.new(_SEED, name.encode(), hashlib.sha256).digest()
    return "pk_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()   # as keys.new_secret's


def secret(i: int) -> str:
    """The secret of synthetic key i in this process (once ensure_corpus has run in it)."""
    return _secret(key_id(i))


def big_secret() -> str:
    """The secret of the big synthetic key in this process (once ensure_big_key has run in it)."""
    return _secret(KEY_PREFIX + "big")


async def _ensure_keys(pool: asyncpg.Pool, named: list[tuple[str, str]], key_cache: KeyCache | None) -> None:
    """Creates the keys (id, name) or gives them this process's secrets; the secrets they had stop
    working. Those go through the key cache, tombstoned as a rotation does (else a replica may still
    admit one it cached, for up to the key cache TTL)."""
    ids = [key for key, _ in named]
    # key_change lifts the tombstones if the transaction fails; FOR UPDATE: as a rotation, so that two
    # loads at once take turns.
    async with key_change(pool), pool.acquire() as conn, conn.transaction():
        current = await conn.fetch("SELECT id, key_hash FROM product_keys WHERE id = ANY($1::text[]) FOR UPDATE",
                                   ids)
        if key_cache is not None:
            for row in current:
                if bytes(row["key_hash"]) != hash_secret(_secret(row["id"])):
                    await key_cache.forbid(bytes(row["key_hash"]))
        await conn.executemany(
            "INSERT INTO product_keys (id, name, key_hash, settings) VALUES ($1, $2, $3, $4::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET key_hash = EXCLUDED.key_hash, settings = EXCLUDED.settings"
            " WHERE (product_keys.key_hash, product_keys.settings)"
            " IS DISTINCT FROM (EXCLUDED.key_hash, EXCLUDED.settings)",
            [(key, name, hash_secret(_secret(key)), _SETTINGS) for key, name in named],
        )


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
                        vectors: bool = True, key_cache: KeyCache | None = None) -> int:
    """Creates keys synth-000.. with `chunks_per_key` chunks each unless they exist; returns the total
    chunk count of the synthetic keys. Idempotent, so a second run (or another test) reuses the data;
    the keys' secrets are this process's (`secret`). `vectors=False` leaves the embeddings out (filled
    later by a call with `vectors=True`): writing them is an UPDATE of every row, which rewrites its GIN
    entries and takes minutes at 100k rows. `key_cache`: see _ensure_keys."""
    words = vocabulary()
    await _ensure_keys(pool, [(key_id(i), f"Synthetic {i}") for i in range(keys)], key_cache)
    async with pool.acquire() as conn:
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


async def ensure_big_key(pool: asyncpg.Pool, chunks: int = 50_000, key_cache: KeyCache | None = None) -> str:
    """One synthetic key with `chunks` chunks (the largest key of the search benchmark), its secret
    this process's (`big_secret`)."""
    words = vocabulary()
    big = KEY_PREFIX + "big"
    await _ensure_keys(pool, [(big, "Synthetic big")], key_cache)
    async with pool.acquire() as conn:
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
