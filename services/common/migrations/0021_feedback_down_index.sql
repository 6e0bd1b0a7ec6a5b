-- TopQuestions and KnowledgeGaps count a turn as rated down when feedback_events holds a rating < 0
-- for its request. The only indexes of feedback_events were its primary key (event id) and the
-- partial index of pending rows, so each call read every tenant's feedback (a sequential scan,
-- hashed). This partial index holds the down-ratings only, by key: the query reads one key's
-- down-rated request ids from it. Default collation, as the query compares product_key_id with its
-- parameter (an index of another collation is not used for that comparison).
CREATE INDEX feedback_events_key_down_idx ON feedback_events (product_key_id, request_id) WHERE rating < 0;
