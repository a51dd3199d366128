"""RFM quintiles against the live population (operators/rfm.py over operators/population.py)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from segstream.operators.population import Population
from segstream.operators.rfm import RFM_BINS, RFM_FEATURES, RfmScore, rfm_score, rfm_values

HOUR = 3600.0
DAY = 86400.0


def buyer(last_purchase: float, purchases: int, revenue: float) -> dict[str, float]:
    return {"last_purchase": last_purchase, "purchases_90d": purchases, "revenue_90d": revenue}


def population_of(people: list[dict[str, float]], *, min_users: int = 1) -> Population:
    population = Population(RFM_FEATURES, bins=RFM_BINS, refresh_share=0.0, min_users=min_users)
    for values in people:
        population.replace(None, population.contribution(values))
    return population


def test_quintiles_of_an_even_population() -> None:
    """100 buyers spread evenly: the lowest fifth scores 1, the highest 5, in each dimension."""
    people = [buyer(DAY * i, i + 1, 10.0 * 1.2**i) for i in range(100)]
    population = population_of(people)
    scores = [str(rfm_score(population, p)) for p in people]
    assert scores[:20] == ["111"] * 20
    assert scores[80:] == ["555"] * 20
    assert scores[50] == "333"


def test_non_buyers_and_small_populations_have_no_score() -> None:
    people = [buyer(DAY * i, 1, 10.0) for i in range(1, 5)]
    assert rfm_score(population_of(people), {"last_purchase": None, "purchases_90d": 0}) is None
    assert rfm_score(population_of(people, min_users=5), people[0]) is None
    assert rfm_score(population_of(people, min_users=4), people[0]) is not None
    assert rfm_values(None, people[0]) == {"rfm_r": None, "rfm_f": None, "rfm_m": None, "rfm": ""}
    assert rfm_values(population_of(people), people[-1])["rfm"] == "533"


def test_a_lone_buyer_is_in_the_middle_and_evictions_move_ranks() -> None:
    low, high = buyer(DAY, 1, 5.0), buyer(10 * DAY, 9, 500.0)
    population = population_of([low, high])
    assert (str(rfm_score(population, low)), str(rfm_score(population, high))) == ("222", "444")
    population.replace(population.contribution(high), None)  # evicted
    assert rfm_score(population, low) == RfmScore(3, 3, 3)


def test_recency_is_ranked_by_the_hour_not_in_400_day_log_bins() -> None:
    """Epoch seconds in 2 % log bins would put a whole year in one bin: all ties."""
    base = 1.7e9
    people = [buyer(base + HOUR * i, 1, 10.0) for i in range(10)]
    population = population_of(people)
    assert [rfm_score(population, p).r for p in people] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_lapsed_buyers_rank_lowest_in_frequency_and_monetary() -> None:
    """A buyer with no purchase in 90 days is a buyer with frequency 0, below every active one."""
    lapsed = [buyer(DAY * i, 0, 0.0) for i in range(1, 6)]
    active = [buyer(DAY * (10 + i), 1 + i, 10.0 * 2**i) for i in range(5)]
    population = population_of(lapsed + active)
    assert {(s.f, s.m) for s in (rfm_score(population, p) for p in lapsed)} == {(2, 2)}
    assert [rfm_score(population, p).f for p in active] == [3, 4, 4, 5, 5]


def test_processes_merged_score_as_one_population() -> None:
    rng = random.Random(7)
    people = [buyer(DAY * rng.randint(0, 90), rng.randint(0, 12), rng.uniform(1, 900))
              for _ in range(300)]
    one = population_of(people)
    a, b = population_of(people[:170]), population_of(people[170:])
    a.set_remote([b.partial()])
    b.set_remote([population_of(people[:170]).partial()])
    for p in people[::7]:
        assert rfm_score(a, p) == rfm_score(b, p) == rfm_score(one, p)


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 40), st.integers(0, 60)),
                min_size=1, max_size=120), st.randoms())
def test_scores_are_exact_mid_rank_quintiles(raw: list, rng: random.Random) -> None:
    """With values a bin apart (whole hours; purchases under 50; revenue 10 % steps) a score is
    the exact mid-rank quintile among buyers, frequency and monetary 0 tied lowest."""
    people = [buyer(HOUR * (472_222 + h) + rng.uniform(0, HOUR - 1), f, 0.0 if m == 0 else 1.1**m)
              for h, f, m in raw]
    keys = [(int(h), f, m) for h, f, m in raw]
    population = population_of(people)
    for i in rng.sample(range(len(people)), min(20, len(people))):
        expected = []
        for dim in range(3):
            below = sum(1 for k in keys if k[dim] < keys[i][dim])
            same = sum(1 for k in keys if k[dim] == keys[i][dim])
            expected.append(1 + min(4, int(5 * (below + same / 2) / len(keys))))
        assert rfm_score(population, people[i]) == RfmScore(*expected)
