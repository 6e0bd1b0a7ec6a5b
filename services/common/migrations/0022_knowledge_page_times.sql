-- When the page last written for a document of a key was crawled (the page event's occurred_at), so the
-- indexer writes a page only if it is not older: after a rebalance a partition's former owner may
-- still write a page that its new owner has already replaced with a newer one. Written in the page's
-- transaction (services/search/indexer.py); a document's row serialises its writers.
CREATE TABLE knowledge_page_times (
    product_key_id text NOT NULL REFERENCES product_keys (id) ON DELETE CASCADE,
    document       text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (product_key_id, document)
);
