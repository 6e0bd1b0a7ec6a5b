"""Key settings a key may override: refused outside their bounds, naming the setting."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.search import keys


@pytest.mark.parametrize("name, value", [
    ("rate_limit_per_second", 1e-17),
    ("rate_limit_per_second", 0.001),
    ("rate_limit_per_second", 1e12),
    ("rate_limit_burst", 10**9),
    ("rate_limit_burst", 0.5),
])
def test_settings_outside_their_bounds_are_invalid(name, value):
    with pytest.raises(InvalidArgument, match=name):
        keys.clean_settings({name: value})


def test_settings_within_their_bounds_are_kept_and_zero_means_the_default():
    assert keys.clean_settings({"rate_limit_per_second": 0.01, "rate_limit_burst": 1}) == {
        "rate_limit_per_second": 0.01, "rate_limit_burst": 1}
    assert keys.clean_settings({"rate_limit_per_second": 1_000_000, "rate_limit_burst": 1_000_000}) == {
        "rate_limit_per_second": 1_000_000.0, "rate_limit_burst": 1_000_000}
    assert keys.clean_settings({"rate_limit_per_second": 0, "rate_limit_burst": 0, "allow_direct": False}) == {}
