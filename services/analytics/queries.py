"""Reads of the metrics tables: range x granularity x optional group-by, with merged histograms."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg

from services.analytics import histogram
from services.common.errors import InvalidArgument
from services.common.text import PROSE_PUNCTUATION

GRANULARITIES = {"minute", "hour", "day", ""}
GROUPS = {"strategy", "model", ""}
MAX_RANGE = timedelta(days=400)
MAX_MINUTE_RANGE = timedelta(days=7)   # per minute: 10,080 points at most without group_by
# Points (buckets x groups) in one reply: a point is about 180 bytes, so a reply stays near 2 MiB,
# under gRPC's 4 MiB; a group_by over a long range could hold several times the buckets.
MAX_POINTS = 12_000
DEFAULT_QUESTIONS, MAX_QUESTIONS = 20, 1000
# Characters of a question in a reply (a message may have 4,000, which a limit of 1,000 questions in
# 3-byte UTF-8 makes 12 MB, three times gRPC's 4 MiB): 1,000 questions of 500 are 2 MB at most.
QUESTION_CHARS = 500

COUNTERS = ("turns", "cache_hits", "errors", "no_answers", "feedback_up", "feedback_down", "tokens_in", "tokens_out")
HISTS = ("total_hist", "ttft_hist", "search_hist", "llm_hist")
# Whether a metrics_minute row holds any count (an UNKNOWN row emptied by moving its pending feedback
# holds none), and whether a group of rows does.
HAS_COUNTS = "(" + " OR ".join(f"{c} <> 0" for c in COUNTERS) + ")"
NOT_EMPTY = f"bool_or{HAS_COUNTS}"


@dataclass
class MetricsRow:
    bucket_start: datetime
    group: str
    counts: dict[str, int] = field(default_factory=dict)
    hists: dict[str, list[int]] = field(default_factory=dict)

    def percentiles(self, hist: str) -> tuple[float, float, float]:
        h = self.hists.get(hist)
        return histogram.percentile(h, 0.50), histogram.percentile(h, 0.95), histogram.percentile(h, 0.99)


def _query(granularity: str, group_by: str) -> str:
    # A minute belongs to the range [start, end) that holds its start: ranges that follow each other
    # (a dashboard asking for [its last end, now) every few seconds) count each minute once.
    # Buckets are cut in UTC whatever the server's or the session's TimeZone: without the zone argument
    # date_trunc cuts hours and days in the session's zone (an hour would start at :30 in Asia/Kolkata).
    bucket = f"date_trunc('{granularity}', minute, 'UTC')" if granularity else "$2::timestamptz"
    group = group_by if group_by else "''"
    # A point of zeros only is none: the all-zero UNKNOWN rows an older worker left when it moved
    # pending feedback to its turns' strategy (the worker now deletes them) came out as such points.
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in COUNTERS)
    hists = ", ".join(f"parley_hist_sum({h}) AS {h}" for h in HISTS)
    return (
        f"SELECT {bucket} AS bucket_start, {group} AS grp, {sums}, {hists} "
        "FROM metrics_minute WHERE product_key_id = $1 AND minute >= $2 AND minute < $3 "
        f"GROUP BY 1, 2 HAVING {NOT_EMPTY} ORDER BY 1, 2 LIMIT {MAX_POINTS + 1}"
    )


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(timezone.utc)
    if start is None:
        try:
            start = end - timedelta(hours=1)
        except OverflowError:
            raise InvalidArgument("end is too early for the default start (an hour before it); give start") from None
    if start >= end:
        raise InvalidArgument("start must be before end")
    if end - start > MAX_RANGE:
        raise InvalidArgument(f"the range is longer than {MAX_RANGE.days} days")
    return start, end


def check_metrics(key_id: str, start: datetime, end: datetime, granularity: str, group_by: str) -> None:
    """What get_metrics refuses before it asks PostgreSQL (a bad request is INVALID_ARGUMENT even
    while no connection is to be had, never a retryable UNAVAILABLE)."""
    if not key_id:
        raise InvalidArgument("product_key_id is required")
    if granularity not in GRANULARITIES or group_by not in GROUPS:
        raise InvalidArgument("unknown granularity or group_by")
    if granularity == "minute" and end - start > MAX_MINUTE_RANGE:
        raise InvalidArgument(f"a range per minute is at most {MAX_MINUTE_RANGE.days} days; ask per hour or per day")


async def get_metrics(
    pool: asyncpg.Pool, key_id: str, start: datetime, end: datetime, granularity: str = "", group_by: str = ""
) -> list[MetricsRow]:
    check_metrics(key_id, start, end, granularity, group_by)
    rows = await pool.fetch(_query(granularity, group_by), key_id, start, end)
    if len(rows) > MAX_POINTS:
        raise InvalidArgument(f"the reply would hold more than {MAX_POINTS:,} points (buckets x groups): ask for "
                              "a shorter range, a coarser granularity or no group_by")
    return [
        MetricsRow(
            bucket_start=r["bucket_start"],
            group=r["grp"],
            counts={c: r[c] or 0 for c in COUNTERS},
            hists={h: list(r[h]) if r[h] else [] for h in HISTS},
        )
        for r in rows
    ]


def merge_rows(rows: list[MetricsRow], start: datetime) -> MetricsRow:
    total = MetricsRow(bucket_start=start, group="")
    total.counts = {c: sum(r.counts.get(c, 0) for r in rows) for c in COUNTERS}
    total.hists = {h: histogram.merge(*(r.hists.get(h) for r in rows)) for h in HISTS}
    return total


@dataclass(frozen=True)
class QuestionStat:
    question: str
    count: int
    no_answers: int
    feedback_down: int


# Questions are grouped as the answer cache tells them apart (services.response.cache.normalise):
# compatibility forms (NFKC), case, prose punctuation (PROSE_PUNCTUATION, the same pattern) and spacing
# folded, symbols kept ("C#" and "C++" are two questions); case by Unicode's rules (ICU's root
# collation, where PostgreSQL has ICU; else the database's, which under a C locale folds ASCII only);
# each group is shown in the form its
# turns wrote most often (spacing folded), cut to QUESTION_CHARS, and two questions that differ only
# beyond that many characters are one. A turn is rated down when the key's feedback holds a rating < 0
# for its request: the key's down-rated request ids are read once from their partial index (migration
# 0021) and joined, instead of a subquery per turn whose hashed form read every tenant's feedback. A
# turn answered NO_ANSWER is one without an error: a turn that failed (cancelled, past its deadline)
# after its plan said NO_ANSWER was not answered, and is no gap (as in metrics_minute's no_answers).
_QUESTIONS = """
WITH turns AS (
    SELECT left(btrim(regexp_replace(regexp_replace(lower(normalize(c.message{collate}, NFKC)), '{prose}+', ' ', 'g'),
                                     '\\s+', ' ', 'g')), {chars}) AS grp,
           left(btrim(regexp_replace(c.message, '\\s+', ' ', 'g')), {chars}) AS written,
           c.strategy = 'NO_ANSWER' AND c.error_code = '' AS no_answer,
           d.request_id IS NOT NULL AS down
    FROM conversations c
    LEFT JOIN (SELECT DISTINCT request_id FROM feedback_events WHERE product_key_id = $1 AND rating < 0) d
        ON d.request_id = c.request_id
    WHERE c.product_key_id = $1 AND c.occurred_at >= $2 AND c.occurred_at < $3
)
SELECT mode() WITHIN GROUP (ORDER BY written) AS question, count(*) AS n,
       count(*) FILTER (WHERE no_answer) AS no_answers, count(*) FILTER (WHERE down) AS feedback_down
FROM turns
GROUP BY grp
{having}
ORDER BY {order}, question
LIMIT $4
"""


async def top_questions(
    pool: asyncpg.Pool, key_id: str, start: datetime, end: datetime, limit: int, *, gaps_only: bool = False
) -> list[QuestionStat]:
    """The most frequent questions; with gaps_only, those answered NO_ANSWER or rated down, worst first."""
    limit = question_limit(key_id, limit)
    rows = await pool.fetch(questions_query(gaps_only, await _unicode_collation(pool)), key_id, start, end, limit)
    return [QuestionStat(r["question"], r["n"], r["no_answers"], r["feedback_down"]) for r in rows]


def question_limit(key_id: str, limit: int) -> int:
    """The number of questions top_questions returns for `limit`, or INVALID_ARGUMENT (checked before
    PostgreSQL is asked, as check_metrics)."""
    if not key_id:
        raise InvalidArgument("product_key_id is required")
    if not 0 <= limit <= MAX_QUESTIONS:
        raise InvalidArgument(f"limit must be between 1 and {MAX_QUESTIONS} (0: {DEFAULT_QUESTIONS}), not {limit}")
    return limit or DEFAULT_QUESTIONS


_ICU_ROOT = "und-x-icu"
_collation: str | None = None


async def _unicode_collation(pool: asyncpg.Pool) -> str:
    """ICU's root collation when this PostgreSQL has it (asked once per process), else ""."""
    global _collation
    if _collation is None:
        found = await pool.fetchval("SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = $1)", _ICU_ROOT)
        _collation = _ICU_ROOT if found else ""
    return _collation


def questions_query(gaps_only: bool, collation: str = "") -> str:
    """The statement of top_questions (key, start, end, limit), its questions folded under `collation`
    (the database's own when "")."""
    collate = f' COLLATE "{collation}"' if collation else ""
    prose = PROSE_PUNCTUATION.replace("'", "''")     # a string literal's quotes doubled
    if gaps_only:
        return _QUESTIONS.format(
            chars=QUESTION_CHARS, collate=collate, prose=prose,
            having="HAVING count(*) FILTER (WHERE no_answer OR down) > 0",
            order="count(*) FILTER (WHERE no_answer OR down) DESC, count(*) DESC",
        )
    return _QUESTIONS.format(chars=QUESTION_CHARS, collate=collate, prose=prose, having="", order="count(*) DESC")
