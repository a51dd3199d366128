"""RFM quintiles against the live population."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from segstream.operators.rfm import DAY, RfmInputs, RfmPopulation


def test_quintiles_of_an_even_population() -> None:
    """100 buyers spread evenly: the lowest fifth scores 1, the highest 5, in each dimension."""
    population = RfmPopulation()
    people = [RfmInputs(DAY * i, i, 10.0 * 1.2**i) for i in range(100)]
    for p in people:
        population.replace(None, p)
    scores = [population.score(p) for p in people]
    assert scores[:20] == ["111"] * 20
    assert scores[80:] == ["555"] * 20
    assert scores[50] == "333"


def test_replace_and_remove_move_the_ranks() -> None:
    population = RfmPopulation()
    low, high = RfmInputs(DAY, 1, 5.0), RfmInputs(10 * DAY, 9, 500.0)
    population.replace(None, low)
    population.replace(None, high)
    assert (population.score(low), population.score(high)) == ("222", "444")
    population.replace(high, None)  # evicted
    assert len(population) == 1
    assert population.score(low) == "333"
    assert population.score(None) == ""


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 30), st.floats(0.5, 1e5)),
                min_size=1, max_size=99), st.randoms())
def test_scores_are_exact_mid_rank_quintiles_of_the_bins(raw: list, rng: random.Random) -> None:
    """Under 100 buyers ranks refresh on every change: a score is the exact mid-rank quintile
    of the user's bins (a day of recency, ~4.7 % of revenue; equal bins are ties)."""
    people = [RfmInputs(DAY * d + rng.uniform(0, DAY - 1), f, m) for d, f, m in raw]
    population = RfmPopulation()
    for p in people:
        population.replace(None, p)
    binned = [p.bins() for p in people]
    for p in rng.sample(people, min(20, len(people))):
        expected = ""
        for dim, value in enumerate(p.bins()):
            below = sum(1 for b in binned if b[dim] < value)
            same = sum(1 for b in binned if b[dim] == value)
            expected += str(1 + min(4, int(5 * (below + same / 2) / len(people))))
        assert population.score(p) == expected


def test_monetary_bins_are_about_five_percent_wide() -> None:
    assert RfmInputs(0, 1, 100.0).bins()[2] == RfmInputs(0, 1, 104.0).bins()[2]
    assert RfmInputs(0, 1, 100.0).bins()[2] < RfmInputs(0, 1, 105.0).bins()[2]
