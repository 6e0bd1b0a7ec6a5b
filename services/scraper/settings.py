"""Settings of the scraper service and its crawl worker (over the shared `CommonSettings`)."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import CommonSettings


class ScraperSettings(CommonSettings):
    """Politeness, limits and leases of crawling and Fetch."""

    # Web scraping (crawler and Fetch).
    scraper_user_agent: str = "ParleyBot/0.1 (+https://github.com/parley/parley; crawler of customer-support knowledge)"
    scraper_allow_networks: str = ""        # comma-separated CIDRs let through the private-address refusal
    scraper_host_concurrency: int = 2       # requests in flight per host
    scraper_host_delay_seconds: float = 0.25  # between request starts per host (robots Crawl-delay wins if longer)
    scraper_job_concurrency: int = 8        # pages in flight per crawl job
    scraper_max_jobs: int = 4               # crawl jobs in flight per worker process
    scraper_max_redirects: int = 5
    scraper_max_page_bytes: int = 2_000_000
    scraper_timeout_seconds: float = 10.0     # to connect, and between two reads of a response
    scraper_request_seconds: float = 30.0     # the whole of one request: a body trickled in is cut off
    scraper_fetch_cache_seconds: int = 600  # TTL of Fetch results in Redis
    # Each page's content is extracted in a child process, with a time and a memory limit (isolation.py).
    scraper_extract_processes: int = 1
    scraper_extract_seconds: float = 15.0
    scraper_extract_memory_mb: int = 1024
    scraper_group_id: str = "parley-crawler"
    # The scraper API's waits for PostgreSQL (StartCrawl, GetCrawl, CancelCrawl, WatchCrawl): for a pooled
    # connection, and for each statement's answer, each also within the caller's deadline. Past either
    # (PostgreSQL frozen, or every connection taken) the call is UNAVAILABLE with a retry hint, not held
    # until its caller gives up.
    scraper_pool_acquire_seconds: float = Field(default=2.0, gt=0)
    scraper_statement_seconds: float = Field(default=3.0, gt=0)

    # Crawl job leases (one worker per job, also across a rebalance).
    # A job is done once the search service has indexed what it handed over (its pages answer at once);
    # the indexer not through after this long, or not committing anything for the stall: done anyway,
    # saying so in the job's error (e.g. the search service is down: the crawl is not held up for it).
    scraper_index_wait_seconds: float = 300.0
    scraper_index_stall_seconds: float = 30.0
    scraper_job_lease_seconds: float = 15.0   # renewed every third of it; a dead worker's job waits this long
    # A job's crawl stops after this long in one worker (its pages so far are indexed, the job is done
    # and says so in its error): a slow or endless site does not hold a worker's job slot for good.
    scraper_job_max_seconds: float = Field(default=3600.0, gt=0)
    # Crawl jobs finished (done, failed, cancelled) longer ago than this are deleted by the crawl workers
    # (services/scraper/jobs.py delete_finished); queued and running ones never. 0 keeps them for good.
    retention_crawl_jobs_days: float = Field(default=30.0, ge=0)
