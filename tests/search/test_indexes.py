"""At scale (>= 100k chunks over >= 100 keys) the per-key search uses the GIN indexes."""

from __future__ import annotations

import pytest

from services.search import retrieval, synthetic


@pytest.mark.timeout(600)
async def test_plan_uses_the_gin_indexes_at_scale(pg):
    total = await synthetic.ensure_corpus(pg, keys=100, chunks_per_key=1000, vectors=False)
    assert total >= 100_000
    assert await pg.fetchval(
        "SELECT count(DISTINCT product_key_id) FROM knowledge_chunks WHERE product_key_id LIKE $1", synthetic.KEY_PREFIX + "%"
    ) >= 100
    words = synthetic.vocabulary()
    plan = await retrieval.explain(pg, synthetic.key_id(42), "english",
                                   f"How do I {words[900]} {words[1500]} my {words[2500]} invoice?")
    assert "knowledge_chunks_key_tsv_idx" in plan, plan
    assert "knowledge_chunks_key_question_trgm_idx" in plan, plan
    assert "Seq Scan on knowledge_chunks" not in plan, plan


@pytest.mark.timeout(600)
async def test_the_bounded_full_text_arm_ranks_a_1000_chunk_key_as_the_unbounded_one(pg):
    # LEXICAL_POOL bounds how many matches are ranked; a key where a message matches fewer chunks
    # (every key of the help-site evaluation) must rank exactly as before the bound.
    import random

    await synthetic.ensure_corpus(pg, keys=100, chunks_per_key=1000, vectors=False)
    words = synthetic.vocabulary()
    rng = random.Random(11)
    for i in range(30):
        question = synthetic.sample_question(rng, words)
        key = synthetic.key_id(i % 100)
        bounded = await retrieval.search(pg, key, "english", question, limit=10)
        unbounded = await retrieval.search(pg, key, "english", question, limit=10, pool=10**9)
        assert bounded == unbounded, question
        assert bounded, question


async def test_a_message_matching_more_chunks_than_the_pool_ranks_only_the_pool(pg):
    import uuid

    from services.common.knowledge_store import NewChunk, insert_chunks
    from services.search import keys

    key, _ = await keys.create_key(pg, name="Pool bound", key_id=f"pool-{uuid.uuid4().hex[:8]}")
    async with pg.acquire() as conn:
        await insert_chunks(conn, key.id, "document", "doc", "Widgets", "",
                            [NewChunk(f"The widget number {n} has a blue handle.") for n in range(12)])
    found = await retrieval.search(pg, key.id, "english", "blue widget handle", limit=20, pool=5)
    assert len(found) == 5
    assert len(await retrieval.search(pg, key.id, "english", "blue widget handle", limit=20)) == 12


@pytest.mark.timeout(600)
async def test_known_lexemes_do_not_depend_on_the_pool(pg):
    # A lexeme seen in a pooled match counts as known without an index probe; the others are probed.
    # With a pool of one chunk almost every lexeme is probed, with an unbounded one almost none: the
    # share of known terms must be the same.
    import random

    await synthetic.ensure_corpus(pg, keys=100, chunks_per_key=1000, vectors=False)
    words = synthetic.vocabulary()
    rng = random.Random(12)
    shares = set()
    for i in range(30):
        question = synthetic.sample_question(rng, words) + (" qzxvortle" if i % 3 == 0 else "")
        key = synthetic.key_id(i % 100)
        one = {c.known for c in await retrieval.search(pg, key, "english", question, limit=10, pool=1)}
        every = {c.known for c in await retrieval.search(pg, key, "english", question, limit=10, pool=10**9)}
        assert one == every and len(every) == 1, question
        shares |= every
    assert min(shares) < 1.0 and max(shares) > 0.0, shares
