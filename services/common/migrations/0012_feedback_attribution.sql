-- Feedback is counted in metrics_minute under the strategy and model of the turn it rates. The
-- turns and the feedback are different topics, written by different writers: a feedback event
-- applied before its turn (the turn's partition behind, a worker restarted between them) found no
-- turn and was counted under UNKNOWN for good. Such feedback is now marked pending; the stream
-- worker moves its counts to the turn's strategy and model once the turn is stored, in the same
-- transaction that clears the mark (so exactly once). The partial index holds only pending rows.
ALTER TABLE feedback_events ADD COLUMN pending boolean NOT NULL DEFAULT false;
CREATE INDEX feedback_events_pending_idx ON feedback_events (request_id) WHERE pending;
