"""Events as storable rows: text PostgreSQL accepts, COPY records, and metrics pre-aggregated per minute."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone

from services.analytics.histogram import BOUNDS, MIN_MS, N_BUCKETS
from services.common.pb.parley.v1 import common_pb2, events_pb2

# PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate: either makes the whole
# statement fail. Parsed protobuf strings are valid UTF-8 but may contain NUL; both are handled.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_STRATEGY = {v.number: v.name.removeprefix("STRATEGY_") for v in common_pb2.Strategy.DESCRIPTOR.values}
_CACHE = {v.number: v.name.removeprefix("CACHE_STATUS_") for v in common_pb2.CacheStatus.DESCRIPTOR.values}
_HIT = {common_pb2.CACHE_STATUS_HIT, common_pb2.CACHE_STATUS_SHARED}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Columns of the staging table the turns are COPYed into (sink.STAGE_TURNS). The time goes in as
# microseconds since the epoch and the source ids as one string: both encode several times faster
# than a datetime and a text[] and are converted back by the INSERT ... SELECT.
STAGE_COLUMNS = (
    "event_id", "product_key_id", "session_id", "request_id", "occurred_us", "message", "answer",
    "strategy", "model", "cache_status", "error_code", "total_ms", "ttft_ms", "search_ms", "llm_ms",
    "tokens_in", "tokens_out", "cost_usd", "source_ids",
)
SOURCE_SEPARATOR = "\x1f"


def storable(text: str) -> str:
    """The text without NUL and lone surrogates (replaced by U+FFFD), which PostgreSQL refuses."""
    if "\x00" not in text and (text.isascii() or _UNSTORABLE.search(text) is None):  # fast path first
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def when(ts) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def minute_of(ts) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds - ts.seconds % 60)


def unique(events: Iterable) -> list:
    """Events in order with repeated event ids dropped: a producer retry inside one batch."""
    seen: set[str] = set()
    add = seen.add
    out = []
    for e in events:
        event_id = e.event_id
        if event_id not in seen:
            add(event_id)
            out.append(e)
    return out


def turn_record(t: events_pb2.ChatTurn) -> tuple:
    """One staging row in STAGE_COLUMNS order. (Runs for every event: one check of all its text at
    once, plain lookups, no datetime.)"""
    tm = t.timings
    usage = t.usage
    ts = t.occurred_at
    text = (t.event_id, t.product_key_id, t.session_id, t.request_id, t.message, t.answer, t.model, t.error_code,
            SOURCE_SEPARATOR.join(t.source_ids))
    joined = "".join(text)
    if "\x00" in joined or not (joined.isascii() or _UNSTORABLE.search(joined) is None):
        text = tuple(map(storable, text))
    event_id, key_id, session_id, request_id, message, answer, model, error_code, sources = text
    return (
        event_id, key_id, session_id, request_id, ts.seconds * 1_000_000 + ts.nanos // 1000, message, answer,
        _STRATEGY.get(t.strategy, "UNSPECIFIED"), model or "unknown", _CACHE.get(t.cache_status, "UNSPECIFIED"),
        error_code, tm.total_ms, tm.ttft_ms, tm.search_ms, tm.llm_ms, usage.prompt_tokens, usage.completion_tokens,
        t.cost_usd, sources,
    )


class MinuteTotals:
    """metrics_minute increments of one (key, minute, strategy, model), summed in Python so the
    upsert has one row per group instead of one per event."""

    __slots__ = ("turns", "cache_hits", "errors", "no_answers", "tokens_in", "tokens_out", "hists")

    def __init__(self) -> None:
        self.turns = self.cache_hits = self.errors = self.no_answers = self.tokens_in = self.tokens_out = 0
        self.hists = [[0] * N_BUCKETS for _ in range(4)]  # total, ttft, search, llm

    def merge(self, other: MinuteTotals) -> None:
        for name in ("turns", "cache_hits", "errors", "no_answers", "tokens_in", "tokens_out"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in zip(self.hists, other.hists):
            for i, c in enumerate(theirs):
                mine[i] += c

    def add(self, t: events_pb2.ChatTurn) -> None:
        self.turns += 1
        self.cache_hits += t.cache_status in _HIT
        self.errors += t.error_code != ""
        self.no_answers += t.strategy == common_pb2.STRATEGY_NO_ANSWER
        self.tokens_in += t.usage.prompt_tokens
        self.tokens_out += t.usage.completion_tokens
        tm = t.timings
        total, ttft, search, llm = self.hists
        # bucket_of inlined (four times per event): values at or below the first bound go to bucket 0.
        total[bisect_left(BOUNDS, tm.total_ms) if tm.total_ms > MIN_MS else 0] += 1
        ttft[bisect_left(BOUNDS, tm.ttft_ms) if tm.ttft_ms > MIN_MS else 0] += 1
        search[bisect_left(BOUNDS, tm.search_ms) if tm.search_ms > MIN_MS else 0] += 1
        llm[bisect_left(BOUNDS, tm.llm_ms) if tm.llm_ms > MIN_MS else 0] += 1


def minute_totals(turns: Iterable[events_pb2.ChatTurn]) -> dict[tuple[str, datetime, str, str], MinuteTotals]:
    by_seconds: dict[tuple[str, int, int, str], MinuteTotals] = {}
    for t in turns:
        seconds = t.occurred_at.seconds
        key = (t.product_key_id, seconds - seconds % 60, t.strategy, t.model)
        totals = by_seconds.get(key)
        if totals is None:
            totals = by_seconds[key] = MinuteTotals()
        totals.add(t)
    groups: dict[tuple[str, datetime, str, str], MinuteTotals] = {}
    for (key_id, minute, strategy, model), totals in by_seconds.items():
        key = (storable(key_id), _EPOCH + timedelta(seconds=minute), _STRATEGY.get(strategy, "UNSPECIFIED"),
               storable(model) or "unknown")
        if key in groups:  # two raw values stored alike
            groups[key].merge(totals)
        else:
            groups[key] = totals
    return groups


def _pg_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def metrics_columns(groups: dict[tuple[str, datetime, str, str], MinuteTotals]) -> list[list]:
    """The groups as one array per column of UPSERT_METRICS, sorted by primary key so that two
    writers touching the same rows lock them in the same order (no deadlock between them)."""
    cols: list[list] = [[] for _ in range(14)]
    for key in sorted(groups):
        g = groups[key]
        values = (*key, g.turns, g.cache_hits, g.errors, g.no_answers, g.tokens_in, g.tokens_out,
                  *(_pg_array(h) for h in g.hists))
        for col, v in zip(cols, values):
            col.append(v)
    return cols


def feedback_columns(items: Sequence[events_pb2.Feedback]) -> list[list]:
    cols: list[list] = [[] for _ in range(6)]
    for f in unique(items):
        values = (storable(f.event_id), storable(f.product_key_id), storable(f.request_id), when(f.occurred_at),
                  f.rating, storable(f.comment))
        for col, v in zip(cols, values):
            col.append(v)
    return cols
