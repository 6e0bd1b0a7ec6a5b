"""The minutely summaries (parley.metrics.minutely.v1): a JSON summary per key and minute once the
minute has closed, published again whenever later events change it."""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone

from prometheus_client import Counter

from services.analytics import histogram
from services.analytics.queries import HAS_COUNTS

logger = logging.getLogger(__name__)

SUMMARIES_DROPPED = Counter(
    "parley_worker_minutely_summaries_dropped_total",
    "(key, minute)s whose summary was owed but forgotten, the oldest first, to keep the owed ones under "
    "MAX_DIRTY while summaries could not be published.",
)
# (key, minute)s whose summary is owed, at most. While publishing fails (the topic missing, the broker
# refusing) and consumption goes on, every batch marks more: without a bound the set grew by one entry
# per key and minute for as long as it lasted (about 200 bytes each: 100 keys for a week, 1M entries,
# 200 MB). Past the bound the oldest minutes are forgotten (their summaries stay unpublished, as after a
# restart), down to TRIM_TO of it, so a trim, which sorts, is rare.
MAX_DIRTY = 200_000
TRIM_TO = 0.9

# A row with no count in it (an UNKNOWN row an older worker left empty when it moved pending feedback
# to its turns' strategy) has no entry in turns_by_strategy_model.
MINUTE_SUMMARY = """
SELECT sum(turns)::bigint AS turns, sum(cache_hits)::bigint AS cache_hits, sum(errors)::bigint AS errors,
       sum(no_answers)::bigint AS no_answers, sum(feedback_up)::bigint AS feedback_up,
       sum(feedback_down)::bigint AS feedback_down, sum(tokens_in)::bigint AS tokens_in,
       sum(tokens_out)::bigint AS tokens_out, parley_hist_sum(total_hist) AS total_hist,
       jsonb_object_agg(strategy || '/' || model, turns) FILTER (WHERE """ + HAS_COUNTS + """) AS by_strategy_model
FROM metrics_minute WHERE product_key_id = $1 AND minute = $2
"""

# (key, value) -> once the producer has taken the message, what resolves when the broker has it.
Send = Callable[[bytes, bytes], Awaitable[Awaitable]]


def minute_summary_json(key_id: str, minute: datetime, row) -> bytes:
    hist = list(row["total_hist"] or [])
    return json.dumps({
        "product_key_id": key_id,
        "minute": minute.isoformat(),
        **{k: int(row[k] or 0) for k in ("turns", "cache_hits", "errors", "no_answers", "feedback_up",
                                          "feedback_down", "tokens_in", "tokens_out")},
        "total_ms": {f"p{int(q * 100)}": histogram.percentile(hist, q) for q in (0.5, 0.95, 0.99)},
        "turns_by_strategy_model": json.loads(row["by_strategy_model"] or "{}"),
        "published_at": datetime.now(timezone.utc).isoformat(),
    }).encode()


class MinutelySummaries:
    """The (key, minute)s changed since their summary was last published (dirty), marked as the batches
    that change them commit, and their summaries, published once the minute has closed."""

    def __init__(self, fetchrow: Callable[..., Awaitable], send: Send, max_dirty: int = MAX_DIRTY) -> None:
        self._fetchrow = fetchrow
        self._send = send
        self.max_dirty = max_dirty
        self.dirty: set[tuple[str, datetime]] = set()
        self._dropping = False  # said once, until a round publishes again

    def mark(self, minutes: Iterable[tuple[str, datetime]]) -> None:
        """These (key, minute)s changed, in a transaction that has committed."""
        self.dirty.update(minutes)
        if len(self.dirty) > self.max_dirty:
            self._trim()

    def _trim(self) -> None:
        keep = int(self.max_dirty * TRIM_TO)
        oldest = heapq.nsmallest(len(self.dirty) - keep, self.dirty, key=lambda m: (m[1], m[0]))
        self.dirty.difference_update(oldest)
        SUMMARIES_DROPPED.inc(len(oldest))
        if not self._dropping:
            self._dropping = True
            logger.error("minutely summaries are not being published and more than %d are owed: the oldest "
                         "minutes' summaries are dropped (%d so far, up to %s; parley_worker_minutely_summaries"
                         "_dropped_total counts them)", self.max_dirty, len(oldest), oldest[-1][1].isoformat())

    async def publish(self, now: datetime | None = None) -> None:
        """Publishes the dirty minutes that have closed. Each is unmarked before its rows are read, so a
        batch that changes it after the read marks it again (unmarked after the send, it lost that mark,
        made while it was still marked, and its summary stayed stale for good). One whose read or send
        fails is marked again and the round ends (PostgreSQL or Kafka away: the next round tries again);
        one the broker does not take in the end is marked again too."""
        closed_before = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        deliveries = []
        failed = False
        for key_id, minute in sorted(m for m in self.dirty if m[1] < closed_before):
            self.dirty.discard((key_id, minute))
            try:
                row = await self._fetchrow(MINUTE_SUMMARY, key_id, minute)
                sent = await self._send(key_id.encode(), minute_summary_json(key_id, minute, row))
            except Exception as exc:  # noqa: BLE001 - PostgreSQL or Kafka away: the minute stays dirty
                self.dirty.add((key_id, minute))
                logger.warning("minutely summary of %s %s not published yet: %s", key_id, minute, exc)
                failed = True
                break
            deliveries.append(((key_id, minute), sent))
        for (key_id, minute), sent in deliveries:
            try:
                await sent
            except Exception as exc:  # noqa: BLE001 - the broker refused it: the minute stays dirty
                self.dirty.add((key_id, minute))
                logger.warning("minutely summary of %s %s not delivered: %s", key_id, minute, exc)
                failed = True
        if not failed:
            self._dropping = False
