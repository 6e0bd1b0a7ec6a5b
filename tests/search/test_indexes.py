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
