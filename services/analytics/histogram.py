"""Latency histograms over fixed log-spaced buckets, so merged percentiles stay exact to a bucket."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

# Bucket i holds values in (BOUNDS[i-1], BOUNDS[i]] milliseconds; bucket 0 holds everything up to
# BOUNDS[0] and the last bucket everything above BOUNDS[-2]. Four buckets per doubling: a value is
# known to within 19 % of itself.
MIN_MS = 0.25
STEPS_PER_DOUBLING = 4
N_BUCKETS = 80
BOUNDS: tuple[float, ...] = tuple(MIN_MS * 2 ** (i / STEPS_PER_DOUBLING) for i in range(N_BUCKETS - 1)) + (math.inf,)


def bucket_of(ms: float) -> int:
    """Index of the bucket that holds a latency in milliseconds: the first bound >= ms.
    (A binary search in C: the stream worker calls this four times per event.)"""
    if not ms > MIN_MS:  # also NaN and negatives
        return 0
    return bisect_left(BOUNDS, ms)


def histogram(values: Iterable[float]) -> list[int]:
    counts = [0] * N_BUCKETS
    for v in values:
        counts[bucket_of(v)] += 1
    return counts


def merge(*hists: Sequence[int] | None) -> list[int]:
    total = [0] * N_BUCKETS
    for h in hists:
        if h:
            for i, c in enumerate(h):
                total[i] += c
    return total


def percentile(hist: Sequence[int] | None, q: float) -> float:
    """The upper bound of the bucket holding the q-quantile (0 < q <= 1); 0 for an empty histogram.
    The last bucket has no upper bound: its lower bound is reported."""
    if not hist:
        return 0.0
    n = sum(hist)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, c in enumerate(hist):
        seen += c
        if seen >= rank:
            return BOUNDS[i] if i < N_BUCKETS - 1 else BOUNDS[N_BUCKETS - 2]
    return BOUNDS[N_BUCKETS - 2]


def bucket_width(ms: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket that holds ms."""
    i = bucket_of(ms)
    lower = 0.0 if i == 0 else BOUNDS[i - 1]
    return lower, BOUNDS[i]
