-- Dense retrieval by sentence as well as by passage: each chunk's quotable sentences (and table rows)
-- embedded with their page title and section heading, float32 little-endian vectors one after the
-- other (empty: none). NULL: not computed yet; the indexer computes them at start, as for a model change.
ALTER TABLE knowledge_chunks ADD COLUMN sentence_embeddings bytea;
