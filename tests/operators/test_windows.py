"""Bucketed rolling windows: resolutions, boundaries, expiry, late counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.operators.windows import (
    DAY_WINDOWS,
    REVENUE,
    WindowLayout,
    WindowSpec,
    parse_duration,
)

LAYOUT = WindowLayout.build(("1h", "24h", "7d", "30d"))
H1, H24, D7, D30 = LAYOUT.horizons


def test_resolutions_and_kept_buckets() -> None:
    """1h at 5 min, 24h at 1 h, days at 1 day; the day level keeps 90 days for F/M."""
    assert [(s.resolution, s.span) for s in LAYOUT.horizons] == [
        (300, 12), (3600, 24), (86400, 7), (86400, 30)]
    assert LAYOUT.resolutions == (300, 3600, 86400)
    assert LAYOUT.keep == (12, 24, 90)
    assert [s.name for s in DAY_WINDOWS] == ["30d", "90d"]


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("2h", 7200), ("14d", 1209600)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "1w", "-1h", "1.5h", "h"])
def test_bad_durations_raise(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_horizon_too_short_or_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 7m"):
        WindowSpec.parse("5m")
    with pytest.raises(ValueError, match="unique"):
        WindowLayout.build(("1h", "1h"))


def test_window_edges_follow_bucket_indexes() -> None:
    """At T, the 1h window holds buckets b(T)-11 .. b(T): an event 12 buckets back is out."""
    levels = LAYOUT.empty()
    at = 300 * 1000 + 150.0  # inside bucket 1000
    LAYOUT.add(levels, 300 * 988.0, "search", 0.0)  # bucket 988: out
    LAYOUT.add(levels, 300 * 989.0, "search", 0.0)  # bucket 989: first one in
    LAYOUT.add(levels, 300 * 1000 + 299.0, "search", 0.0)  # last second of bucket 1000: in
    assert LAYOUT.count(levels, H1, at, "search") == 2
    assert LAYOUT.count(levels, H24, at, "search") == 3


def test_revenue_and_purchases_at_day_resolution() -> None:
    levels = LAYOUT.empty()
    day = 86400.0
    LAYOUT.add(levels, 10 * day, "purchase", 30.0)
    LAYOUT.add(levels, 60 * day, "purchase", 12.5)
    LAYOUT.add(levels, 100 * day, "purchase", 7.5)
    at = 100 * day + 5
    assert LAYOUT.total(levels, DAY_WINDOWS[0], at, REVENUE) == 7.5
    assert LAYOUT.total(levels, DAY_WINDOWS[1], at, REVENUE) == 20.0  # day 10 is out of 90d
    assert [b[0] for b in levels[-1]] == [60, 100]  # day 10 expired when day 100 arrived


def test_late_count_lands_in_a_kept_day_only() -> None:
    levels = LAYOUT.empty()
    LAYOUT.add(levels, 100 * 86400.0, "add_to_cart", 0.0)
    LAYOUT.add(levels, 95 * 86400.0, "add_to_cart", 0.0, coarsest_only=True)
    LAYOUT.add(levels, 5 * 86400.0, "add_to_cart", 0.0, coarsest_only=True)  # beyond 90 days
    assert [b[0] for b in levels[-1]] == [95, 100]
    assert LAYOUT.count(levels, D7, 100 * 86400.0, "add_to_cart") == 2
    assert LAYOUT.count(levels, H24, 100 * 86400.0, "add_to_cart") == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 200 * 86400), st.sampled_from(
    ["product_view", "search", "purchase", "page_view", None])), max_size=60))
def test_counts_equal_a_direct_count_of_sorted_events(raw: list) -> None:
    """In timeline order, each window count is the events whose bucket is in range."""
    levels = LAYOUT.empty()
    events = sorted(raw, key=lambda x: x[0])
    for ts, role in events:
        LAYOUT.add(levels, ts, role, 1.0)
    if not events:
        return
    at = events[-1][0]
    for spec in (*LAYOUT.horizons, *DAY_WINDOWS):
        for role in ("product_view", "search", "purchase"):
            newest = int(at // spec.resolution)
            expected = sum(1 for ts, r in events if r == role
                           and newest - spec.span < int(ts // spec.resolution) <= newest)
            assert LAYOUT.count(levels, spec, at, role) == expected
    for level, keep in zip(levels, LAYOUT.keep, strict=True):
        assert len(level) <= keep
        assert [b[0] for b in level] == sorted({b[0] for b in level})
