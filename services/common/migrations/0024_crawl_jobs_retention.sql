-- The crawl workers delete the jobs finished (done, failed, cancelled) more than
-- PARLEY_RETENTION_CRAWL_JOBS_DAYS ago (services/scraper/jobs.py, delete_finished): this partial index
-- holds the finished jobs by finish time, so each batch reads only the rows it deletes, oldest first,
-- and queued or running jobs are not in it. crawl_jobs holds one row per crawl (thousands, not
-- millions): built in the migration's transaction, it holds the table's writes for a moment.
CREATE INDEX crawl_jobs_finished_idx ON crawl_jobs (finished_at) WHERE state IN ('done', 'failed', 'cancelled');
