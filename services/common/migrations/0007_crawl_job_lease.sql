-- A crawl job is run by the one worker that holds its lease. After a Kafka rebalance the worker that
-- lost the partition may still be crawling while the new owner reads the same request: the new owner
-- claims the job only once the lease is free (finished, released, or expired because its holder died).
ALTER TABLE crawl_jobs ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE crawl_jobs ADD COLUMN IF NOT EXISTS lease_until timestamptz;
