"""RFM score: a buyer's recency, frequency and monetary quintiles against the live population.

The three dimensions are features the population statistics track for every
process (``operators/population.py``): recency by ``last_purchase`` (binned
by the hour; a later purchase is more recent at any "now", so ranking needs no
reference time), frequency by ``purchases_90d`` and monetary by
``revenue_90d`` (logarithmic bins 2 % wide). So the score ranks a buyer among
*all* buyers of every process, as of the population's last refresh.

The population of a dimension is its buyers: users with a ``last_purchase``.
A buyer with no purchase in 90 days has frequency and monetary 0 and ranks
below every buyer who has some. A score per dimension is the mid-rank (buyers
in lower bins plus half of those in the same bin) in fifths, 1 to 5. Users
without a purchase have no score, and neither has anyone while the population
has fewer buyers than ``min_population``.

Rules read the digits as ``rfm_r``, ``rfm_f``, ``rfm_m`` and the whole as
``rfm`` (``"354"``); the Redis profile carries ``rfm``.

>>> from segstream.operators.population import Population
>>> population = Population(RFM_FEATURES, bins=RFM_BINS)
>>> for i in range(1, 11):
...     population.replace(None, population.contribution(
...         {"last_purchase": 86400.0 * i, "purchases_90d": i, "revenue_90d": 10.0 * i}))
>>> rfm_score(population, {"last_purchase": 86400.0 * 10, "purchases_90d": 10, "revenue_90d": 100.0})
RfmScore(r=5, f=5, m=5)
>>> str(rfm_score(population, {"last_purchase": 86400.0, "purchases_90d": 0, "revenue_90d": 0.0}))
'111'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from segstream.operators.population import TIMESTAMP_BIN_S, Bins, Population

RECENCY, FREQUENCY, MONETARY = "last_purchase", "purchases_90d", "revenue_90d"
RFM_FEATURES = (RECENCY, FREQUENCY, MONETARY)
"""The features the three dimensions rank, in score order."""
RFM_BINS = {RECENCY: Bins(TIMESTAMP_BIN_S)}
"""Their binning where not logarithmic."""
RFM_NAMES = {"rfm_r": "number", "rfm_f": "number", "rfm_m": "number", "rfm": "string"}
"""What expressions read of the score, with types."""


class RfmScore(NamedTuple):
    """A buyer's quintile per dimension, 1 (lowest fifth) to 5 (highest)."""

    r: int
    f: int
    m: int

    def __str__(self) -> str:
        return f"{self.r}{self.f}{self.m}"


def rfm_score(population: Population, values: Mapping[str, Any]) -> RfmScore | None:
    """Return the RFM score of a user with feature ``values`` (``None``: no score).

    ``None`` for a user without a purchase, a population that does not track
    the RFM features, or fewer buyers than ``population.min_users``.
    """
    last_purchase = values.get(RECENCY)
    if last_purchase is None:
        return None
    recency = population.rank(RECENCY, last_purchase)
    if recency is None:
        return None
    below, same, buyers = recency
    if buyers < max(1, population.min_users):
        return None
    digits = [_quintile(below, same, buyers)]
    for feature in (FREQUENCY, MONETARY):
        value = values.get(feature)
        ranked = population.rank(feature, value)
        if ranked is None:
            return None
        below, same, active = ranked
        # Buyers with nothing in 90 days are not in the feature's population
        # (it counts non-zero values): together they are the buyers' lowest bin.
        lapsed = max(0, buyers - active)
        digits.append(_quintile(0, lapsed, buyers) if not value
                      else _quintile(lapsed + below, same, buyers))
    return RfmScore(*digits)


def rfm_values(population: Population | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return what expressions read of a user's RFM score: ``rfm_r``, ``rfm_f``, ``rfm_m``, ``rfm``.

    Without a score the digits are ``None`` (a comparison reading them is false)
    and ``rfm`` is ``""``.
    """
    score = None if population is None else rfm_score(population, values)
    if score is None:
        return {"rfm_r": None, "rfm_f": None, "rfm_m": None, "rfm": ""}
    return {"rfm_r": score.r, "rfm_f": score.f, "rfm_m": score.m, "rfm": str(score)}


def _quintile(below: int, same: int, total: int) -> int:
    return 1 + min(4, int(5 * (below + same / 2) / total))
