-- conversations takes one row per chat turn from the stream worker, and most of PostgreSQL's
-- work per turn is inserting into this table's btree indexes at random positions. Measured per
-- row of the worker's INSERT ... SELECT (same batches into each variant, backend CPU): the three
-- changes below cut it by about a quarter.
--
-- 1. The identifiers are compared bytewise: under the database's libc collation every comparison
--    of an index insert goes through strcoll, under "C" it is a memcmp. These columns are ids,
--    only ever compared for equality or grouped, never sorted for display; equality is the same.
-- 2. (product_key_id, occurred_at) was a second btree per turn for TopQuestions / KnowledgeGaps
--    (a key's turns in a time range), rare reads of a table written at every turn. That query is
--    served by the (product_key_id, session_id, occurred_at) index (the key as the bound, the time
--    checked inside the index) or, for a recent range over many keys' turns, by a BRIN on
--    occurred_at (turns arrive in about time order; a BRIN insert is nearly free).
-- 3. Deduplication is off on the two non-unique btrees whose keys are all distinct (a request id
--    per turn; a session's turns differ in time): it could never merge anything, and it runs
--    before each page split.
ALTER INDEX conversations_key_session_time_idx SET (deduplicate_items = off);
ALTER INDEX conversations_request_idx SET (deduplicate_items = off);
DROP INDEX conversations_key_time_idx;
ALTER TABLE conversations
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN product_key_id TYPE text COLLATE "C",
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN request_id TYPE text COLLATE "C";
CREATE INDEX conversations_time_brin_idx ON conversations USING brin (occurred_at);

-- The stream worker's metrics upsert adds each batch's four histograms to the stored ones: one
-- parley_hist_add per histogram and (key, minute, strategy, model), hundreds per batch, a cost per
-- batch that does not shrink with the batch. The SQL version (unnest, sort by ordinality,
-- array_agg) took about three times as long per call as this loop over the (expanded) array.
-- Same results, NULL elements counted as 0, the longer array's length.
CREATE OR REPLACE FUNCTION parley_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    r bigint[];
    other bigint[];
BEGIN
    IF a IS NULL THEN RETURN b; END IF;
    IF b IS NULL THEN RETURN a; END IF;
    IF cardinality(b) > cardinality(a) THEN
        r := b; other := a;
    ELSE
        r := a; other := b;
    END IF;
    FOR i IN 1 .. cardinality(r) LOOP
        r[i] := coalesce(r[i], 0) + coalesce(other[i], 0);
    END LOOP;
    RETURN r;
END
$$;
