"""Population statistics: exact mean and std under adds and removals, percentiles within 1 %, merging."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segstream.operators.population import LOG, Bins, Population

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 6))


def exact_percentile(data: list[float], p: int) -> float:
    ordered = sorted(data)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def check(population: Population, data: list[float]) -> None:
    live = [v for v in data if v != 0.0]
    if not live:
        assert population.stat("mean", "x") is None
        return
    assert math.isclose(population.stat("mean", "x"), statistics.fmean(live), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(population.stat("std", "x"), statistics.pstdev(live), rel_tol=1e-6, abs_tol=1e-5)
    for p in (1, 10, 50, 90, 99):
        expected = exact_percentile(live, p)
        assert math.isclose(population.stat(f"p{p}", "x"), expected, rel_tol=0.0101), (p, expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), values), max_size=80))
def test_statistics_follow_each_users_latest_value(updates: list[tuple[int, float]]) -> None:
    """Whatever the sequence of user updates, the statistics are those of every user's latest value."""
    population = Population(("x",), refresh_share=0.0)
    latest: dict[int, float] = {}
    held: dict[int, tuple[float | None, ...] | None] = {}
    for user, value in updates:
        new = population.contribution({"x": value})
        population.replace(held.get(user), new)
        held[user], latest[user] = new, value
    check(population, list(latest.values()))


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=60), st.lists(values, max_size=60))
def test_processes_merge_to_the_whole(first: list[float], second: list[float]) -> None:
    """Two processes exchanging partials see the statistics of all users together."""
    a, b = Population(("x",), refresh_share=0.0), Population(("x",), refresh_share=0.0)
    for population, data in ((a, first), (b, second)):
        for value in data:
            population.replace(None, population.contribution({"x": value}))
    a.set_remote([b.partial()])
    b.set_remote([a.partial()])
    for population in (a, b):
        check(population, first + second)


def test_eviction_takes_a_user_out() -> None:
    population = Population(("x",))
    one = population.contribution({"x": 5.0})
    two = population.contribution({"x": 15.0})
    population.replace(None, one)
    population.replace(None, two)
    assert population.stat("mean", "x") == 10.0
    population.replace(two, None)
    assert population.stat("mean", "x") == 5.0
    assert population.stat("std", "x") == 0.0


def test_zero_missing_and_non_numbers_are_not_in_the_population() -> None:
    population = Population(("x", "y"))
    assert population.contribution({"x": 0.0, "y": None}) is None
    assert population.contribution({"x": True, "y": "text"}) is None
    assert population.contribution({"x": 3, "y": float("inf")}) == (3.0, None)
    assert population.stat("p90", "unknown") is None


def test_refresh_share_bounds_staleness() -> None:
    """Statistics are refreshed after 1 % of the users changed: at most that stale."""
    population = Population(("x",))
    for i in range(1, 1001):
        population.replace(None, population.contribution({"x": float(i)}))
    population.set_remote([])  # refreshes now: the count of changes starts at 0
    assert population.stat("mean", "x") == 500.5
    for _ in range(9):  # under 1 % of 1,000 users
        population.replace(None, population.contribution({"x": 10_000.0}))
    assert population.stat("mean", "x") == 500.5
    population.replace(None, population.contribution({"x": 10_000.0}))  # the 10th: refresh
    assert population.stat("mean", "x") == (500_500 + 100_000) / 1010


timestamps = st.integers(1_600_000_000, 1_800_000_000).map(float)


@settings(max_examples=100, deadline=None)
@given(st.lists(timestamps, min_size=1, max_size=60))
def test_timestamps_in_hour_bins_give_percentiles_within_half_an_hour(data: list[float]) -> None:
    """Linear bins: a log bin of an epoch time would be about 400 days wide."""
    population = Population(("t",), refresh_share=0.0, bins={"t": Bins(3600.0)})
    for value in data:
        population.replace(None, population.contribution({"t": value}))
    for p in (1, 50, 99):
        assert abs(population.stat(f"p{p}", "t") - exact_percentile(data, p)) <= 1800.0
    assert math.isclose(population.stat("mean", "t"), statistics.fmean(data), rel_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=60), values)
def test_rank_counts_the_users_in_lower_bins_and_in_the_same_bin(data: list[float], probe: float) -> None:
    """With values rounded to their bins' representatives, ranks are exact comparisons."""
    population = Population(("x",), refresh_share=0.0)
    live: list[float] = []
    for value in data:
        population.replace(None, population.contribution({"x": value}))
        if value != 0.0:
            live.append(LOG.value_of(LOG.bin_of(value)))
    key = 0.0 if probe == 0.0 else LOG.value_of(LOG.bin_of(probe))
    below, same, users = population.rank("x", probe)
    assert users == len(live)
    assert below == sum(1 for v in live if v < key)
    assert same == (0 if probe == 0.0 else sum(1 for v in live if v == key))


def test_layout_names_the_features_and_their_binning() -> None:
    plain = Population(("t", "x"))
    assert plain.layout == Population(("t", "x")).layout
    assert plain.layout != Population(("t", "y")).layout
    assert plain.layout != Population(("t", "x"), bins={"t": Bins(3600.0)}).layout


def test_aggregates_binned_otherwise_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """A process binning a feature differently (another version) cannot be merged bin by bin."""
    hourly = Population(("t",), refresh_share=0.0, bins={"t": Bins(3600.0)})
    logarithmic = Population(("t",), refresh_share=0.0)
    logarithmic.replace(None, (1.7e9,))
    hourly.set_remote([logarithmic.partial()])
    assert hourly.stat("mean", "t") is None
    assert "binned as log, here as linear:3600" in caplog.text


@pytest.mark.parametrize("extreme", [1e303, 1e308, -1e308, 1e140, 1.7976931348623157e308])
def test_extreme_values_never_raise_and_leave_no_trace(extreme: float) -> None:
    """A value that overflowed the fixed-point sums (1e303) is clipped: finite statistics, no
    exception, and its removal restores the statistics exactly."""
    population = Population(("x",), refresh_share=0.0)
    for value in (10.0, 20.0, 30.0):
        population.replace(None, (value,))
    before = population.snapshot()
    population.replace(None, (extreme,))
    population.replace(None, (extreme,))  # two of them made revenue_total infinite
    stats = population.snapshot()["x"]
    assert all(value is not None and math.isfinite(value) for value in stats.values())
    population.replace((extreme,), None)
    population.replace((extreme,), None)
    assert population.snapshot() == before
