"""What the indexing path stores as a chunk's vectors: by default its passage and each sentence encoded apart;
with PARLEY_EMBEDDING_SENTENCES=in-passage its passage encoded once, its sentences pooled from that
encoding, and a sentence past the passage's truncation encoded on its own (no stack needed)."""

from __future__ import annotations

import numpy as np

from services.common.embedding import DIMENSIONS, Embedder
from services.common.knowledge_store import NewChunk, split_vectors
from services.search.indexing import ChunkText, Indexing


async def test_by_default_a_chunk_and_its_sentences_are_encoded_apart():
    embedder = Embedder.load()
    assert embedder.sentences == "apart"
    texts = [ChunkText.of(NewChunk("Charging\nPlug the charger into the port under the seat. A full charge takes four hours."),
                          "page", "Help")]
    stored = await Indexing(pool=None, load_embedder=lambda: embedder)._embed_chunks(texts)
    passage, sentences = split_vectors(stored[0])
    np.testing.assert_allclose(np.frombuffer(passage, dtype="<f4"), embedder.embed([texts[0].passage])[0], atol=2e-5)
    np.testing.assert_allclose(np.frombuffer(sentences, dtype="<f4").reshape(-1, DIMENSIONS),
                               embedder.embed(texts[0].sentences), atol=2e-5)
    assert len(texts[0].sentences) == 2


async def test_in_passage_a_chunk_is_encoded_once_and_its_sentences_pooled_from_it():
    embedder = Embedder.load()
    long_tail = " ".join(f"Filler sentence number {i} says nothing at all about the bike, its battery or its charger." for i in range(40))
    chunks = [NewChunk("Charging\nPlug the charger into the port under the seat. A full charge takes four hours."),
              NewChunk(f"Battery\n{long_tail}\nThe pack weighs 1.2 kg."),
              NewChunk("It weighs 2 kg.", question="How heavy is it?")]
    texts = [ChunkText.of(c, kind, "Help") for c, kind in zip(chunks, ("page", "page", "faq"))]
    calls: list[list[str]] = []

    class Counting(Embedder):       # the same model, counting what is encoded on its own
        def embed(self, texts, batch_size=16):
            calls.append(list(texts))
            return embedder.embed(texts, batch_size)

    counting = Counting.__new__(Counting)
    counting.__dict__.update(embedder.__dict__)
    counting.sentences = "in-passage"
    stored = await Indexing(pool=None, load_embedder=lambda: counting)._embed_chunks(texts)
    vectors = [np.frombuffer(p + s, dtype="<f4").reshape(-1, DIMENSIONS) for p, s in map(split_vectors, stored)]
    assert [len(v) - 1 for v in vectors] == [2, 24, 0]      # sentences per chunk (the FAQ entry has none)
    np.testing.assert_allclose(np.stack([v[0] for v in vectors]), embedder.embed([t.passage for t in texts]), atol=2e-5)
    # The first chunk's sentences come from its passage's encoding, not from encoding them apart.
    _, (pooled, *_) = embedder.embed_spans([texts[0].passage], [texts[0].spans])
    np.testing.assert_allclose(vectors[0][1:], pooled, atol=1e-5)
    assert not np.allclose(vectors[0][1:], embedder.embed(texts[0].sentences), atol=1e-3)
    # Only the sentences past the long passage's 256 word pieces were encoded apart, as they read alone.
    late = [s for s, r in zip(texts[1].sentences, texts[1].spans)
            if np.isnan(embedder.embed_spans([texts[1].passage], [[r]])[1][0][0, 0])]
    assert calls == [late] and 0 < len(late) < 24
    np.testing.assert_allclose(vectors[1][-len(late):], embedder.embed(late), atol=2e-5)
