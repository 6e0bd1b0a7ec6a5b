"""The in-process vector index: exact top-k, version checks and the memory bound (no stack needed)."""

from __future__ import annotations

import numpy as np

from services.search.vector_index import KeyVectors, VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_top_k_is_exact_and_best_first():
    rng = np.random.default_rng(3)
    matrix = unit(rng.standard_normal((500, 384)))
    entry = KeyVectors(1, np.arange(1000, 1500, dtype=np.int64), matrix)
    query = matrix[123]
    hits = entry.top(query, 10)
    expected = np.argsort(-(matrix @ query))[:10]
    assert [int(c) for c, _ in hits] == [1000 + int(i) for i in expected]
    assert hits[0] == ("1123", hits[0][1]) and abs(hits[0][1] - 1.0) < 1e-5
    assert len(entry.top(query, 5000)) == 500 and entry.top(query, 0) == []


def test_least_recently_used_keys_are_dropped_beyond_the_byte_bound():
    index = VectorIndex(pool=None, model_id="m", max_bytes=3 * (100 * 384 * 4 + 800))
    for name in "abcd":
        index._keys[name] = KeyVectors(1, np.arange(100, dtype=np.int64), np.zeros((100, 384), np.float32))
        index._evict(keep=name)
    assert list(index._keys) == ["b", "c", "d"]
    assert index.nbytes <= index.max_bytes


def test_forget_drops_only_older_versions():
    index = VectorIndex(pool=None, model_id="m", max_bytes=1 << 30)
    index._keys["k"] = KeyVectors(5, np.zeros(0, np.int64), np.zeros((0, 384), np.float32))
    assert not index.forget("k", 5) and index.loaded("k") is not None
    assert index.forget("k", 6) and index.loaded("k") is None


def test_a_large_key_is_partitioned_and_finds_what_an_exact_scan_finds():
    rng = np.random.default_rng(9)
    # Clustered vectors, as embeddings of a help site are: 300 topics, 25_000 chunks.
    topics = unit(rng.standard_normal((300, 384)))
    matrix = unit(topics[rng.integers(0, 300, 25_000)] + 0.6 * rng.standard_normal((25_000, 384)) / np.sqrt(384))
    ids = np.arange(25_000, dtype=np.int64)
    partitioned = KeyVectors.build(1, ids, matrix)
    exact = KeyVectors(1, ids, matrix)
    assert partitioned.centroids is not None and partitioned.bounds[-1] == 25_000
    recall = []
    for q in rng.integers(0, 25_000, 30):
        query = matrix[q]
        got = {c for c, _ in partitioned.top(query, 20)}
        want = {c for c, _ in exact.top(query, 20)}
        assert str(q) in got                                  # the query's own chunk, first
        recall.append(len(got & want) / 20)
    assert np.mean(recall) >= 0.9, np.mean(recall)
    small = KeyVectors.build(1, ids[:1000], matrix[:1000])
    assert small.centroids is None


async def test_questions_differing_in_case_accents_or_spacing_share_a_cached_vector():
    from services.common.embedding import Embedder
    from services.search.vector_index import QueryEmbeddings

    embedder = Embedder.load()
    queries = QueryEmbeddings(embedder.embed_one, key=embedder.query_key)
    first = await queries.vector("Battery  WEIGHT of the café scale?")
    again = await queries.vector("battery weight of the cafe\tscale?")
    other = await queries.vector("battery weight of the cafe scales?")
    assert (queries.hits, queries.misses) == (1, 2)
    assert again is first and other is not first
    # Sharing is safe only because the model sees the same word pieces: the vectors are equal.
    np.testing.assert_allclose(embedder.embed_one("battery weight of the cafe\tscale?"), first, atol=1e-6)



def test_a_chunk_one_of_whose_sentences_matches_outranks_a_vaguely_close_passage():
    rng = np.random.default_rng(5)
    query = unit(rng.standard_normal((1, 384)))[0]
    noise = unit(rng.standard_normal((4, 384)))
    # Chunk 0's passage vector is somewhat close as a whole; chunk 1's passage vector is farther, but
    # one of its sentences says what is asked.
    vague = unit((query + 1.2 * noise[0])[None])[0]
    far = unit((query + 2.0 * noise[1])[None])[0]
    sentences = [np.zeros((0, 384), np.float32), unit(np.stack([noise[2], query + 0.1 * noise[3]]))]
    entry = KeyVectors.build(1, np.array([10, 11], dtype=np.int64), np.stack([vague, far]), sentences)
    assert float(vague @ query) > float(far @ query)
    hits = entry.top(query, 2)
    assert [c for c, _ in hits] == ["11", "10"]
    best_sentence = float(sentences[1][1] @ query)
    assert abs(hits[0][1] - (0.5 * float(far @ query) + 0.5 * best_sentence)) < 2e-3     # half-precision sentences
    assert abs(hits[1][1] - float(vague @ query)) < 1e-5       # no sentences: the passage cosine alone
    assert entry.nbytes == 2 * 8 + 2 * 384 * 4 + 2 * 384 * 2 + 3 * 8


def test_sentence_vectors_follow_their_chunks_when_a_large_key_is_partitioned():
    rng = np.random.default_rng(8)
    matrix = unit(rng.standard_normal((21_000, 384)))
    sentences = [matrix[i:i + 1] * 0 + matrix[i] for i in range(21_000)]      # each chunk's own vector
    sentences[77] = unit(rng.standard_normal((1, 384)))
    entry = KeyVectors.build(1, np.arange(21_000, dtype=np.int64), matrix, sentences)
    assert entry.centroids is not None
    row = int(np.flatnonzero(entry.ids == 77)[0])
    np.testing.assert_allclose(entry.sentences[entry.starts[row]:entry.starts[row + 1]], sentences[77], atol=1e-3)
    hits = dict(entry.top(matrix[5], 3))
    assert abs(hits["5"] - 1.0) < 1e-5


async def test_a_search_at_a_newer_version_does_not_settle_for_a_load_that_read_an_older_one():
    """A load of the key started at version 1 is still running when version 2 commits and a search at
    version 2 arrives: it must not take that load's vectors, which miss what version 2 added."""
    import asyncio

    index = VectorIndex(pool=None, model_id="m", max_bytes=1 << 30)
    db_version, started, release, reads = 1, asyncio.Event(), asyncio.Event(), []

    async def load(key_id: str) -> KeyVectors:
        read = db_version                  # the snapshot is taken as the load starts
        reads.append(read)
        started.set()
        await release.wait()
        entry = index._keys[key_id] = KeyVectors(read, np.zeros(0, np.int64), np.zeros((0, 384), np.float32))
        return entry

    index._load = load
    first = asyncio.ensure_future(index.vectors("k", 1))
    await started.wait()
    db_version = 2
    second = asyncio.ensure_future(index.vectors("k", 2))
    await asyncio.sleep(0)              # it finds the load in flight and waits for it
    assert reads == [1]
    release.set()
    assert (await first).version == 1
    assert (await second).version >= 2
    assert index.loaded("k").version == 2 and reads == [1, 2]
