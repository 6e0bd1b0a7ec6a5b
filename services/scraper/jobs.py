"""Crawl jobs: validation of a request, the crawl_jobs row and its progress."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import asyncpg

from services.common import db
from services.common.errors import (RETRY_AFTER_TRAILER, TRANSIENT_RETRY_AFTER_SECONDS, InvalidArgument, NotFound,
                                    Unavailable)
from services.common.hosts import host_problem
from services.scraper.crawler import CrawlSpec, Progress
from services.scraper.urls import MAX_URL_CHARS, normalize_url
from services.scraper.patterns import compile_patterns

DEFAULT_MAX_PAGES = 100
LIMIT_MAX_PAGES = 10_000
DEFAULT_MAX_DEPTH = 3
LIMIT_MAX_DEPTH = 20
MAX_SEEDS = 100
MAX_PATTERNS = 50
TERMINAL = ("done", "failed", "cancelled")


def new_job_id() -> str:
    return "crawl-" + uuid.uuid4().hex[:16]


def validate(
    key_id: str, seed_urls: list[str], sitemap_url: str, max_pages: int, max_depth: int,
    include: list[str], exclude: list[str], job_id: str = "",
) -> CrawlSpec:
    """A crawl request as a spec, or InvalidArgument naming what is wrong. 0 means the default limit."""
    if not key_id.strip():
        raise InvalidArgument("product_key_id is required")
    if not seed_urls and not sitemap_url:
        raise InvalidArgument("give seed_urls, a sitemap_url, or both")
    if len(seed_urls) > MAX_SEEDS:
        raise InvalidArgument(f"at most {MAX_SEEDS} seed URLs")
    for url in [*seed_urls, sitemap_url]:
        if len(url) > MAX_URL_CHARS:
            raise InvalidArgument(f"URL {url[:80]!r}… has {len(url)} characters; the limit is {MAX_URL_CHARS}")
    seeds = [_crawl_url("seed URL", url) for url in seed_urls]
    sitemap = _crawl_url("sitemap_url", sitemap_url) if sitemap_url else ""
    if not 0 <= max_pages <= LIMIT_MAX_PAGES:
        raise InvalidArgument(f"max_pages must be between 1 and {LIMIT_MAX_PAGES} (0: {DEFAULT_MAX_PAGES})")
    if not 0 <= max_depth <= LIMIT_MAX_DEPTH:
        raise InvalidArgument(f"max_depth must be between 1 and {LIMIT_MAX_DEPTH} (0: {DEFAULT_MAX_DEPTH})")
    for name, patterns in (("include", include), ("exclude", exclude)):
        if len(patterns) > MAX_PATTERNS:
            raise InvalidArgument(f"at most {MAX_PATTERNS} {name} patterns")
        compile_patterns(name, patterns)
    return CrawlSpec(
        job_id=job_id or new_job_id(), product_key_id=key_id.strip(), seed_urls=seeds, sitemap_url=sitemap,
        max_pages=max_pages or DEFAULT_MAX_PAGES, max_depth=max_depth or DEFAULT_MAX_DEPTH,
        include=list(include), exclude=list(exclude),
    )


def _crawl_url(name: str, url: str) -> str:
    """The URL normalized, or InvalidArgument: not an absolute http(s) URL, or a host that is neither a
    DNS name nor an IP address, by the rule Fetch and a key's website follow ("http://134744072/" and
    "http://127.1/" are shorthands of IPv4 addresses that a resolver takes and a browser reads)."""
    normal = normalize_url(url)
    if not normal:
        raise InvalidArgument(f"{name} {url!r} is not an absolute http(s) URL")
    if problem := host_problem(urlsplit(normal).hostname or ""):
        raise InvalidArgument(f"{name} {url!r}: {problem}")
    return normal


@dataclass
class JobStatus:
    job_id: str
    product_key_id: str
    state: str
    progress: Progress
    error: str
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def _request_json(spec: CrawlSpec) -> str:
    return json.dumps({
        "seed_urls": spec.seed_urls, "sitemap_url": spec.sitemap_url, "max_pages": spec.max_pages,
        "max_depth": spec.max_depth, "include": spec.include, "exclude": spec.exclude,
    })


_KEY_ACTIVE = """
SELECT clock_timestamp() AS now, EXISTS (SELECT 1 FROM product_keys WHERE id = $1 AND revoked_at IS NULL) AS active
"""


async def require_active_key(conn: asyncpg.Pool | asyncpg.Connection, key_id: str, *,
                             timeout: float | None = None) -> datetime:
    """PostgreSQL's clock when it found the key active (create_job counts its deadline from it), or NotFound."""
    row = await conn.fetchrow(_KEY_ACTIVE, key_id, timeout=timeout)
    if not row["active"]:
        raise NotFound(f"no active product key with id {key_id[:100]!r}")
    return row["now"]


# The insert carries its own deadline on PostgreSQL's clock. A statement PostgreSQL reads only after its
# caller gave up (the server frozen, then resumed: it still executes what waits on the closed
# connection) inserts nothing, so no job is left queued whose request never went to Kafka.
_INSERT_JOB = """
INSERT INTO crawl_jobs (id, product_key_id, request)
SELECT $1, $2, $3::jsonb WHERE $4::timestamptz IS NULL OR clock_timestamp() < $4::timestamptz
"""


async def create_job(conn: asyncpg.Pool | asyncpg.Connection, spec: CrawlSpec, *, timeout: float | None = None) -> None:
    """Records the job as queued once its key is found active. With `timeout` (each statement's wait),
    the row is written only if PostgreSQL takes the insert before this caller stops waiting for it."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held:
            return await create_job(held, spec, timeout=timeout)
    checked_at = await require_active_key(conn, spec.product_key_id, timeout=timeout)
    # The key check ran before its answer came, and the insert goes out at once: its clock plus this
    # statement's wait is, on PostgreSQL's clock, no later than the moment this caller gives up.
    not_after = None if timeout is None else checked_at + timedelta(seconds=timeout)
    result = await conn.execute(_INSERT_JOB, spec.job_id, spec.product_key_id, _request_json(spec), not_after,
                                timeout=timeout)
    if result == "INSERT 0 0":
        raise Unavailable(f"PostgreSQL took longer than {timeout:g} s to record the crawl; retry shortly",
                          trailers={RETRY_AFTER_TRAILER: str(TRANSIENT_RETRY_AFTER_SECONDS)})


_PROGRESS_COLUMNS = list(Progress().as_dict())


def check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument("job_id is required")


async def get_job(conn: asyncpg.Pool | asyncpg.Connection, job_id: str, *, timeout: float | None = None) -> JobStatus:
    check_job_id(job_id)
    row = await conn.fetchrow("SELECT * FROM crawl_jobs WHERE id = $1", job_id, timeout=timeout)
    if row is None:
        raise NotFound(f"no crawl job {job_id!r}")
    return JobStatus(
        job_id=row["id"], product_key_id=row["product_key_id"], state=row["state"],
        progress=Progress(**{c: row[c] for c in _PROGRESS_COLUMNS}), error=row["error"],
        started_at=row["started_at"], finished_at=row["finished_at"],
    )


_CANCEL = """
UPDATE crawl_jobs SET state = 'cancelled', error = 'cancelled', finished_at = now(), claimed_by = NULL,
       lease_until = NULL, updated_at = now()
WHERE id = $1 AND state NOT IN ('done', 'failed', 'cancelled')
"""


async def cancel(conn: asyncpg.Pool | asyncpg.Connection, job_id: str, *, timeout: float | None = None) -> JobStatus:
    """Ends a job that has not ended: its worker no longer holds it, so the worker's next lease renewal
    fails and stops the crawl. A job that has ended is left as it is (a retried cancel is harmless).
    `timeout`: each statement's wait."""
    check_job_id(job_id)
    await conn.execute(_CANCEL, job_id, timeout=timeout)
    return await get_job(conn, job_id, timeout=timeout)


async def job_state(pool: asyncpg.Pool, job_id: str) -> str | None:
    return await pool.fetchval("SELECT state FROM crawl_jobs WHERE id = $1", job_id)


# The claim is one statement: two workers that race for a job serialise on its row, and the second
# sees the first's live lease (migration 0007).
_CLAIM = """
UPDATE crawl_jobs SET state = 'running', claimed_by = $2, lease_until = now() + make_interval(secs => $3),
       started_at = coalesce(started_at, now()), error = '', updated_at = now()
WHERE id = $1 AND state NOT IN ('done', 'failed', 'cancelled')
  AND (claimed_by IS NULL OR claimed_by = $2 OR lease_until < now())
RETURNING id
"""


async def claim(pool: asyncpg.Pool, job_id: str, worker_id: str, lease_seconds: float) -> str:
    """'claimed' (this worker runs it now), 'busy' (another worker's lease is live), 'finished'
    (done, failed or cancelled: nothing to do) or 'unknown'."""
    if await pool.fetchval(_CLAIM, job_id, worker_id, float(lease_seconds)) is not None:
        return "claimed"
    state = await job_state(pool, job_id)
    if state is None:
        return "unknown"
    return "finished" if state in TERMINAL else "busy"


async def renew(pool: asyncpg.Pool, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extends this worker's lease; False when the job is no longer this worker's."""
    return await pool.fetchval(
        "UPDATE crawl_jobs SET lease_until = now() + make_interval(secs => $3) WHERE id = $1 AND claimed_by = $2"
        " AND state = 'running' RETURNING true", job_id, worker_id, float(lease_seconds),
    ) is not None


async def save_progress(pool: asyncpg.Pool | asyncpg.Connection, job_id: str, progress: Progress,
                        state: str | None = None, error: str = "", owner: str | None = None,
                        timeout: float | None = None) -> bool:
    """With owner, only while that worker holds the job; a final (or re-queued) state releases it.
    False when nothing was written."""
    values = progress.as_dict()
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(_PROGRESS_COLUMNS, start=2))
    n = len(_PROGRESS_COLUMNS) + 2
    finish = ", finished_at = now()" if state in TERMINAL else ""
    release = ", claimed_by = NULL, lease_until = NULL" if state is not None and state != "running" else ""
    only_owner = f" AND claimed_by = ${n + 2}" if owner is not None else ""
    args = [job_id, *[values[c] for c in _PROGRESS_COLUMNS], state, error] + ([owner] if owner is not None else [])
    result = await pool.execute(
        f"UPDATE crawl_jobs SET {sets}, state = coalesce(${n}, state), error = ${n + 1}{finish}{release},"
        f" updated_at = now() WHERE id = $1{only_owner}",
        *args, timeout=timeout,
    )
    return result != "UPDATE 0"


# Finished jobs past their retention are deleted by the crawl workers (several pods: one at a time, by
# this pg_try_advisory_lock key), in short batches by ctid; the partial index of migration 0024 holds the
# finished jobs by finish time, so a batch reads only the rows it deletes. Queued and running jobs are
# never deleted, whatever their age. A crawl request replayed for a deleted job finds no job and is
# ignored (as for any unknown job): its job had finished.
CRAWL_JOBS_RETENTION_LOCK = 0x7061726C_65790002   # "parley" + 2 (the analytics retention holds + 1)
_DELETE_FINISHED = """
DELETE FROM crawl_jobs WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM crawl_jobs
    WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < now() - make_interval(secs => $1)
    LIMIT $2))
"""


async def delete_finished(pool: asyncpg.Pool, older_than_seconds: float, batch_rows: int = 5000,
                          pause: float = 0.01, on_batch=lambda n: None) -> int | None:
    """Deletes the jobs finished (done, failed, cancelled) more than `older_than_seconds` ago, `batch_rows`
    per transaction; the rows deleted, or None when another worker holds the lock (its run does it)."""
    async with db.advisory_lock(pool, CRAWL_JOBS_RETENTION_LOCK) as conn:
        if conn is None:
            return None
        total = 0
        while True:
            n = int((await conn.execute(_DELETE_FINISHED, float(older_than_seconds), batch_rows)).split()[-1])
            total += n
            if n:
                on_batch(n)
            if n < batch_rows:
                return total
            await asyncio.sleep(pause)
