-- The stream worker deletes the analytics rows past their retention (services/analytics/stream/retention.py),
-- window by window of their time. conversations has a BRIN on occurred_at since 0009; feedback_events and
-- metrics_minute had no index on their time (their keys are event id, and key + minute + strategy +
-- model), so each delete batch would read the whole table. A BRIN each: both are written in about the
-- order of their time, a BRIN is a few pages however large the table, and its upkeep per insert is
-- small (1.2 µs per row for conversations', against 4-7 µs for a btree: see README). Migrations run in
-- a transaction, so not CONCURRENTLY: the build holds writes to the table (the sink's batches wait,
-- nothing is lost) for one scan of it; measured: see README, "Retention".
CREATE INDEX feedback_events_time_brin_idx ON feedback_events USING brin (occurred_at);
CREATE INDEX metrics_minute_time_brin_idx ON metrics_minute USING brin (minute);
