-- Crawl jobs and what the scraper knows about every page it fetched (for conditional re-crawls).
CREATE TABLE crawl_jobs (
    id                   text PRIMARY KEY,
    product_key_id       text NOT NULL REFERENCES product_keys (id) ON DELETE CASCADE,
    request              jsonb NOT NULL,                 -- seeds, sitemap, limits, patterns
    state                text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    pages_seen           int NOT NULL DEFAULT 0,
    pages_fetched        int NOT NULL DEFAULT 0,
    pages_unchanged      int NOT NULL DEFAULT 0,
    pages_failed         int NOT NULL DEFAULT 0,
    pages_robots_skipped int NOT NULL DEFAULT 0,
    pages_skipped        int NOT NULL DEFAULT 0,
    pages_removed        int NOT NULL DEFAULT 0,
    chunks_written       int NOT NULL DEFAULT 0,
    chunks_deleted       int NOT NULL DEFAULT 0,
    error                text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crawl_jobs_key_idx ON crawl_jobs (product_key_id, created_at DESC);

-- One row per URL of a key the crawler fetched: validators for conditional GET and the hash of
-- the extracted content, so an unchanged page costs a 304 or a hash comparison and writes nothing.
CREATE TABLE crawled_pages (
    product_key_id text NOT NULL REFERENCES product_keys (id) ON DELETE CASCADE,
    url            text NOT NULL,                     -- as requested (normalised)
    document       text NOT NULL DEFAULT '',          -- knowledge_chunks.document of its chunks (canonical URL)
    status         int NOT NULL,
    etag           text NOT NULL DEFAULT '',
    last_modified  text NOT NULL DEFAULT '',
    content_hash   bytea,
    title          text NOT NULL DEFAULT '',
    chunk_count    int NOT NULL DEFAULT 0,
    links          text[] NOT NULL DEFAULT '{}',      -- outgoing links, so a 304 still leads deeper
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    changed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_key_id, url)
);
