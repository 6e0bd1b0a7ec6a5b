-- A crawl job can be cancelled by the admin (CancelCrawl): a final state beside done and failed.
ALTER TABLE crawl_jobs DROP CONSTRAINT IF EXISTS crawl_jobs_state_check;
ALTER TABLE crawl_jobs ADD CONSTRAINT crawl_jobs_state_check
    CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled'));
