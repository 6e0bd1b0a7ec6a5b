-- Product keys, their knowledge, and the analytics tables the stream processor writes.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE product_keys (
    id                text PRIMARY KEY,              -- public id, used in events and analytics
    name              text NOT NULL,
    key_hash          bytea NOT NULL UNIQUE,         -- sha256 of the secret key; the secret is never stored
    instructions      text NOT NULL DEFAULT '',
    website           text NOT NULL DEFAULT '',
    ts_config         regconfig NOT NULL DEFAULT 'english',
    settings          jsonb NOT NULL DEFAULT '{}'::jsonb,
    knowledge_version bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz
);

CREATE TABLE knowledge_chunks (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_key_id text NOT NULL REFERENCES product_keys (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('faq', 'document', 'page')),
    document       text NOT NULL DEFAULT '',          -- groups the chunks of one document or page
    title          text NOT NULL DEFAULT '',
    question       text NOT NULL DEFAULT '',          -- for FAQ entries
    content        text NOT NULL,
    url            text NOT NULL DEFAULT '',
    position       int NOT NULL DEFAULT 0,
    content_hash   bytea NOT NULL,
    tsv            tsvector NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (product_key_id, content_hash)
);
CREATE INDEX knowledge_chunks_tsv_idx ON knowledge_chunks USING gin (tsv);
CREATE INDEX knowledge_chunks_trgm_idx ON knowledge_chunks USING gin (content gin_trgm_ops);
CREATE INDEX knowledge_chunks_key_doc_idx ON knowledge_chunks (product_key_id, document);

-- One row per chat turn, written by the stream processor (never on the request path).
CREATE TABLE conversations (
    event_id       text PRIMARY KEY,
    product_key_id text NOT NULL,
    session_id     text NOT NULL,
    request_id     text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    message        text NOT NULL,
    answer         text NOT NULL,
    strategy       text NOT NULL,
    model          text NOT NULL,
    cache_status   text NOT NULL,
    error_code     text NOT NULL DEFAULT '',
    total_ms       double precision NOT NULL,
    ttft_ms        double precision NOT NULL,
    search_ms      double precision NOT NULL,
    llm_ms         double precision NOT NULL,
    tokens_in      int NOT NULL,
    tokens_out     int NOT NULL,
    cost_usd       double precision NOT NULL,
    source_ids     text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX conversations_key_session_time_idx ON conversations (product_key_id, session_id, occurred_at DESC);
CREATE INDEX conversations_key_time_idx ON conversations (product_key_id, occurred_at DESC);
CREATE INDEX conversations_request_idx ON conversations (request_id);

CREATE TABLE feedback_events (
    event_id       text PRIMARY KEY,
    product_key_id text NOT NULL,
    request_id     text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    rating         int NOT NULL,
    comment        text NOT NULL DEFAULT ''
);

-- Latency histograms are bigint arrays over fixed log-spaced buckets (services/analytics/histogram.py),
-- so merging minutes, partitions and workers is an element-wise sum and stays exact to the bucket.
CREATE FUNCTION parley_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
              FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i))
    END
$$;

-- Counts of bucket indexes (0-based) as a histogram of n buckets.
CREATE FUNCTION parley_hist_of(idx int[], n int) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(coalesce(c, 0) ORDER BY b)
    FROM generate_series(0, n - 1) AS b
    LEFT JOIN (SELECT v, count(*) AS c FROM unnest(idx) AS v GROUP BY v) AS counts ON counts.v = b
$$;

CREATE AGGREGATE parley_hist_sum(bigint[]) (SFUNC = parley_hist_add, STYPE = bigint[]);

CREATE TABLE metrics_minute (
    product_key_id text NOT NULL,
    minute         timestamptz NOT NULL,
    strategy       text NOT NULL,
    model          text NOT NULL,
    turns          bigint NOT NULL DEFAULT 0,
    cache_hits     bigint NOT NULL DEFAULT 0,
    errors         bigint NOT NULL DEFAULT 0,
    no_answers     bigint NOT NULL DEFAULT 0,
    feedback_up    bigint NOT NULL DEFAULT 0,
    feedback_down  bigint NOT NULL DEFAULT 0,
    tokens_in      bigint NOT NULL DEFAULT 0,
    tokens_out     bigint NOT NULL DEFAULT 0,
    total_hist     bigint[],
    ttft_hist      bigint[],
    search_hist    bigint[],
    llm_hist       bigint[],
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_key_id, minute, strategy, model)
);

-- Consumed offsets, committed in the same transaction as the batch they produced.
CREATE TABLE stream_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      int NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
