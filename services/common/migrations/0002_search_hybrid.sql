-- Hybrid retrieval confined to one key: the GIN indexes lead with product_key_id (btree_gin), so a
-- full-text or trigram search reads only the posting lists of that key's chunks; rotation is recorded.
-- Trigram similarity is computed on FAQ questions (short) rather than on chunk bodies: word
-- similarity against 1 kB bodies costs ~0.2 ms a row, too slow for the Plan budget.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- fastupdate = off: with the default pending list, every search also scans the entries inserted since
-- the last vacuum (up to 4 MB); after a bulk load that made the search statement ~10x slower.
-- Searches are the hot path; inserts (admin, scraper) pay instead.
CREATE INDEX knowledge_chunks_key_tsv_idx ON knowledge_chunks USING gin (product_key_id, tsv)
    WITH (fastupdate = off);
-- FAQ questions are matched on their own (the FAQ strategy answers with the stored answer).
CREATE INDEX knowledge_chunks_key_question_trgm_idx ON knowledge_chunks
    USING gin (product_key_id, question gin_trgm_ops) WITH (fastupdate = off) WHERE kind = 'faq';

-- The key-less indexes of 0001 are superseded by the per-key ones above.
DROP INDEX IF EXISTS knowledge_chunks_tsv_idx;
DROP INDEX IF EXISTS knowledge_chunks_trgm_idx;

ALTER TABLE product_keys ADD COLUMN rotated_at timestamptz;
