-- Dense retrieval: each chunk's sentence embedding, stored beside it with the model that made it
-- (a chunk whose model is not the current one is re-embedded by the indexer).
ALTER TABLE knowledge_chunks ADD COLUMN embedding bytea;          -- float32 little-endian, unit length
ALTER TABLE knowledge_chunks ADD COLUMN embedding_model text;
CREATE INDEX knowledge_chunks_stale_embedding_idx ON knowledge_chunks (product_key_id, id)
    WHERE embedding IS NULL;

-- A chunk belongs to its document: the same paragraph on two pages is two chunks. (Unique per key, a
-- paragraph shared by two pages was stored once, under the first, and vanished from the second page
-- when the first changed.)
ALTER TABLE knowledge_chunks DROP CONSTRAINT knowledge_chunks_product_key_id_content_hash_key;
ALTER TABLE knowledge_chunks ADD CONSTRAINT knowledge_chunks_key_document_hash_key
    UNIQUE (product_key_id, kind, document, content_hash);
