"""Events as storable rows: text PostgreSQL accepts, COPY records, and metrics pre-aggregated per minute."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone

from services.analytics.histogram import BOUNDS, MIN_MS, N_BUCKETS
from services.analytics.stream.decode import (
    MAX_FLOAT,
    MAX_NANOS,
    MAX_SECONDS,
    MIN_SECONDS,
    InvalidEvent,
    invalid_numbers,
)
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


# (stored product key id, minute as seconds since the epoch, Strategy number, stored model): the
# grouping key while a batch is read; turned into metrics_minute's key by `stored_groups`.
RawGroup = tuple[str, int, int, str]


def turn_rows(turns: Iterable[events_pb2.ChatTurn], rows: list[tuple] | None = None,
              groups: dict[RawGroup, MinuteTotals] | None = None) -> tuple[list[tuple], dict[RawGroup, MinuteTotals]]:
    """The staging rows (STAGE_COLUMNS order) of `turns` and their metrics per raw group, in one pass:
    each field of an event is read once for both (this loop runs for every event; reading protobuf
    fields, the text check and the bucket searches are most of the sink's Python time, and a
    second pass over the events for the metrics cost about a third more). Given `rows` and
    `groups`, adds to them. A turn with numbers no metric may hold raises InvalidEvent (the check is
    made here, on the values read for the rows, rather than at decoding, where reading them again cost
    1.2 µs per turn)."""
    rows = [] if rows is None else rows
    append = rows.append
    groups = {} if groups is None else groups
    strategies, caches, hit, no_answer = _STRATEGY, _CACHE, _HIT, common_pb2.STRATEGY_NO_ANSWER
    bounds, low = BOUNDS, MIN_MS
    min_s, max_s, max_ns, top = MIN_SECONDS, MAX_SECONDS, MAX_NANOS, MAX_FLOAT
    for t in turns:
        ts = t.occurred_at
        seconds = ts.seconds
        # source_ids[:] is a list made at once; iterating the repeated field itself goes element by element
        # through protobuf (0.58 µs against 0.22 µs per turn with two ids).
        text = (t.event_id, t.product_key_id, t.session_id, t.request_id, t.message, t.answer, t.model, t.error_code,
                SOURCE_SEPARATOR.join(t.source_ids[:]))
        joined = "".join(text)  # one check of all its text at once
        if "\x00" in joined or not (joined.isascii() or _UNSTORABLE.search(joined) is None):
            text = tuple(map(storable, text))
        event_id, key_id, session_id, request_id, message, answer, model, error_code, sources = text
        strategy, cache = t.strategy, t.cache_status
        tm, usage = t.timings, t.usage
        total, ttft, search, llm = tm.total_ms, tm.ttft_ms, tm.search_ms, tm.llm_ms
        tokens_in, tokens_out = usage.prompt_tokens, usage.completion_tokens
        nanos, cost = ts.nanos, t.cost_usd
        # Negative or non-finite timings or cost (NaN compares False), negative tokens, a time no
        # Timestamp holds: refused before anything of the turn is added.
        if not (min_s <= seconds <= max_s and 0 <= nanos <= max_ns and 0.0 <= total <= top and 0.0 <= ttft <= top
                and 0.0 <= search <= top and 0.0 <= llm <= top and 0.0 <= cost <= top
                and tokens_in >= 0 and tokens_out >= 0):
            raise InvalidEvent(f"ChatTurn {event_id!r} with {invalid_numbers(t)}")
        append((event_id, key_id, session_id, request_id, seconds * 1_000_000 + nanos // 1000, message, answer,
                strategies.get(strategy, "UNSPECIFIED"), model or "unknown", caches.get(cache, "UNSPECIFIED"),
                error_code, total, ttft, search, llm, tokens_in, tokens_out, cost, sources))
        key = (key_id, seconds - seconds % 60, strategy, model)
        g = groups.get(key)
        if g is None:
            g = groups[key] = MinuteTotals()
        g.turns += 1
        g.cache_hits += cache in hit
        g.errors += error_code != ""
        # A failed turn (cancelled, past its deadline) whose plan said NO_ANSWER was not answered at all:
        # it is an error, and no knowledge gap.
        g.no_answers += strategy == no_answer and not error_code
        g.tokens_in += tokens_in
        g.tokens_out += tokens_out
        h_total, h_ttft, h_search, h_llm = g.hists
        # histogram.bucket_of inlined: values at or below the first bound go to bucket 0. A stage's
        # histogram takes a sample only from a turn where the stage ran: a cache hit or a failed turn
        # has 0 for the stages it never reached, and counted, its zeros made the stage's p50 0.25 ms.
        h_total[bisect_left(bounds, total) if total > low else 0] += 1
        if ttft > 0.0:
            h_ttft[bisect_left(bounds, ttft) if ttft > low else 0] += 1
        if search > 0.0:
            h_search[bisect_left(bounds, search) if search > low else 0] += 1
        if llm > 0.0:
            h_llm[bisect_left(bounds, llm) if llm > low else 0] += 1
    return rows, groups


class TurnBatch:
    """The rows and metrics of a batch of turns, built slice by slice as the turns are decoded, while
    the partition's batch before is in PostgreSQL; a turn repeated inside the batch (a producer's
    retry) is counted once. `events` counts every turn added, repeats included: the batch's rows
    stand for exactly those turns. A turn turn_rows refuses makes the batch `invalid`: its write
    raises that InvalidEvent, and the applier splits the batch until the turn is found and
    dead-lettered (adding stays free of exceptions, as it runs while the batch is assembled)."""

    __slots__ = ("events", "rows", "groups", "_seen", "invalid")

    def __init__(self) -> None:
        self.events = 0
        self.rows: list[tuple] = []
        self.groups: dict[RawGroup, MinuteTotals] = {}
        self._seen: set[str] = set()
        self.invalid: InvalidEvent | None = None

    def add(self, turns: Sequence[events_pb2.ChatTurn]) -> None:
        self.events += len(turns)
        if self.invalid is not None:
            return
        seen, new = self._seen, []
        for t in turns:
            event_id = t.event_id
            if event_id not in seen:
                seen.add(event_id)
                new.append(t)
        try:
            turn_rows(new, self.rows, self.groups)
        except InvalidEvent as exc:
            self.invalid = exc


def stored_groups(raw: dict[RawGroup, MinuteTotals]) -> dict[tuple[str, datetime, str, str], MinuteTotals]:
    """The groups keyed as metrics_minute is: (key, minute, strategy name, model or "unknown")."""
    groups: dict[tuple[str, datetime, str, str], MinuteTotals] = {}
    for (key_id, minute, strategy, model), totals in raw.items():
        key = (key_id, _EPOCH + timedelta(seconds=minute), _STRATEGY.get(strategy, "UNSPECIFIED"), model or "unknown")
        if key in groups:  # two raw values stored alike: summed into a new total, `raw` stays as it was
            merged = MinuteTotals()
            merged.merge(groups[key])
            merged.merge(totals)
            groups[key] = merged
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
