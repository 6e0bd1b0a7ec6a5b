"""Histogram buckets and percentiles."""

from __future__ import annotations

import math
import random

from hypothesis import given, strategies as st

from services.analytics import histogram


def test_bounds_are_log_spaced_and_increasing():
    b = histogram.BOUNDS
    assert len(b) == histogram.N_BUCKETS and math.isinf(b[-1])
    ratios = {round(b[i + 1] / b[i], 9) for i in range(len(b) - 2)}
    assert ratios == {round(2 ** (1 / histogram.STEPS_PER_DOUBLING), 9)}


@given(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_every_value_lies_in_its_bucket(ms):
    lower, upper = histogram.bucket_width(ms)
    assert lower <= ms <= upper or (ms <= histogram.MIN_MS and lower == 0.0)


def test_percentile_of_merged_parts_equals_percentile_of_the_whole():
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1) for _ in range(3000)]
    parts = [histogram.histogram(values[i::3]) for i in range(3)]
    whole = histogram.histogram(values)
    assert histogram.merge(*parts) == whole
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        lower, upper = histogram.bucket_width(exact)
        assert lower < histogram.percentile(whole, q) <= upper


def test_empty_histogram_has_zero_percentiles():
    assert histogram.percentile([], 0.5) == 0.0
    assert histogram.percentile([0] * histogram.N_BUCKETS, 0.99) == 0.0
