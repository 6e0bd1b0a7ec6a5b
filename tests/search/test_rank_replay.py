"""The offline ranking replay (bench/rank_replay.py) ranks as Plan does: the index's scores, then
strategy.fuse and strategy.diversify, passages kept from the passage threshold."""

from __future__ import annotations

import numpy as np

from bench.rank_replay import Key, Question, ranked
from services.search.retrieval import Chunk
from services.search.strategy import diversify, fuse
from services.search.vector_index import KeyVectors


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _key(seed: int) -> tuple[Key, Question, KeyVectors]:
    rng = np.random.default_rng(seed)
    n = 60
    ids = np.arange(100, 100 + n, dtype=np.int64)
    matrix = _unit(rng.normal(size=(n, 384)))
    # Sentences near their passage, so that scores spread around the passage threshold.
    sentences = [_unit(matrix[i] + rng.normal(scale=0.05, size=(int(rng.integers(0, 4)), 384))) for i in range(n)]
    query = _unit(matrix[:8].sum(axis=0) + rng.normal(scale=0.01, size=384))
    meta = {str(int(i)): (f"http://site.test/page{int(i) % 9}.html", "Title", "Text", []) for i in ids}
    relevance = {str(int(ids[j])): float(rng.uniform(0, 1)) for j in rng.choice(24, 10, replace=False)}
    question = Question("q1", "question", ("/page1.html",), (), query, relevance, [], True)
    vectors = KeyVectors.build(1, ids, matrix, sentences)
    key = Key(ids, matrix, vectors.sentences, vectors.starts, meta, [question])
    return key, question, vectors


def _plan_order(key: Key, question: Question, vectors: KeyVectors) -> list[str]:
    """What Plan returns: lexical candidates with their dense score if among the dense top 20 (else 0),
    the dense-only ones appended; fused, diversified, kept from 0.24, five."""
    hits = dict(vectors.top(question.vector, 20))
    chunks = [Chunk(c, "page", "Title", "", "Text", key.meta[c][0], 0.0, relevance=r, dense=hits.get(c, 0.0))
              for c, r in question.relevance.items()]
    chunks += [Chunk(c, "page", "Title", "", "Text", key.meta[c][0], 0.0, dense=s)
               for c, s in hits.items() if c not in question.relevance]
    return [c.id for c in diversify(fuse(chunks, 0.1)) if c.dense >= 0.24][:5]


def test_scores_are_the_index_scores() -> None:
    key, question, vectors = _key(1)
    top = vectors.top(question.vector, 20)
    scores = key.scores(question.vector)
    for cid, score in top:
        assert abs(scores[key.row[cid]] - score) < 1e-5


def test_replay_ranks_as_plan() -> None:
    for seed in range(5):
        key, question, vectors = _key(seed)
        expected = _plan_order(key, question, vectors)
        assert expected, "the synthetic key should leave passages above the threshold"
        assert ranked(key, question) == expected
