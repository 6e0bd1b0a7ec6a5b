"""The minutely summaries (parley.metrics.minutely.v1): a JSON summary per key and minute once the
minute has closed, published again whenever later events change it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone

from services.analytics import histogram

logger = logging.getLogger(__name__)

MINUTE_SUMMARY = """
SELECT sum(turns)::bigint AS turns, sum(cache_hits)::bigint AS cache_hits, sum(errors)::bigint AS errors,
       sum(no_answers)::bigint AS no_answers, sum(feedback_up)::bigint AS feedback_up,
       sum(feedback_down)::bigint AS feedback_down, sum(tokens_in)::bigint AS tokens_in,
       sum(tokens_out)::bigint AS tokens_out, parley_hist_sum(total_hist) AS total_hist,
       jsonb_object_agg(strategy || '/' || model, turns) AS by_strategy_model
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

    def __init__(self, fetchrow: Callable[..., Awaitable], send: Send) -> None:
        self._fetchrow = fetchrow
        self._send = send
        self.dirty: set[tuple[str, datetime]] = set()

    def mark(self, minutes: Iterable[tuple[str, datetime]]) -> None:
        """These (key, minute)s changed, in a transaction that has committed."""
        self.dirty.update(minutes)

    async def publish(self, now: datetime | None = None) -> None:
        """Publishes the dirty minutes that have closed. Each is unmarked before its rows are read, so a
        batch that changes it after the read marks it again (unmarked after the send, it lost that mark,
        made while it was still marked, and its summary stayed stale for good). One whose read or send
        fails is marked again and the round ends (PostgreSQL or Kafka away: the next round tries again);
        one the broker does not take in the end is marked again too."""
        closed_before = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        deliveries = []
        for key_id, minute in sorted(m for m in self.dirty if m[1] < closed_before):
            self.dirty.discard((key_id, minute))
            try:
                row = await self._fetchrow(MINUTE_SUMMARY, key_id, minute)
                sent = await self._send(key_id.encode(), minute_summary_json(key_id, minute, row))
            except Exception as exc:  # noqa: BLE001 - PostgreSQL or Kafka away: the minute stays dirty
                self.dirty.add((key_id, minute))
                logger.warning("minutely summary of %s %s not published yet: %s", key_id, minute, exc)
                break
            deliveries.append(((key_id, minute), sent))
        for (key_id, minute), sent in deliveries:
            try:
                await sent
            except Exception as exc:  # noqa: BLE001 - the broker refused it: the minute stays dirty
                self.dirty.add((key_id, minute))
                logger.warning("minutely summary of %s %s not delivered: %s", key_id, minute, exc)
