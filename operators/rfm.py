"""RFM score: a buyer's recency, frequency and monetary quintiles against the live population.

Each dimension is binned (recency by the day of the last purchase, so ranking
needs no "now": a later last purchase is more recent for everyone alike;
frequency by ``purchases_90d``; monetary by ``revenue_90d`` in 5 % log steps)
and counted in a histogram of the users this worker holds. The ranks that scores
are read from are recomputed from the histograms after every ``1 %`` of the
population changed (every change while it is under 100), so a score is at
most that stale. A user's score is 1-5 per dimension, written ``"RFM"`` (e.g.
``"354"``); a lone buyer is in the middle (``"333"``); users without a purchase
have no score.

Each worker holds a random share of users (Bytewax routes by key hash), so
its quintiles estimate the global ones; the model and rules issues aggregate
population statistics across workers.

>>> population = RfmPopulation()
>>> for i in range(1, 11):
...     population.replace(None, RfmInputs(last_purchase=86400.0 * i, purchases=i, revenue=10.0 * i))
>>> population.score(RfmInputs(86400.0 * 10, 10, 100.0)), population.score(RfmInputs(86400.0, 1, 10.0))
('555', '111')
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from typing import NamedTuple

DAY = 86400.0
_MONETARY_STEPS_PER_DECADE = 50  # bins 10 ** (1/50) apart: about 4.7 %


class RfmInputs(NamedTuple):
    """What a buyer contributes to the population (the user step keeps the last one it added)."""

    last_purchase: float
    purchases: int
    revenue: float

    def bins(self) -> tuple[int, int, int]:
        """Return the histogram bins of the three dimensions (higher is better in each)."""
        monetary = (
            math.floor(math.log10(self.revenue) * _MONETARY_STEPS_PER_DECADE)
            if self.revenue > 0 else -(10**9)
        )
        return int(self.last_purchase // DAY), self.purchases, monetary


class RfmPopulation:
    """Histograms of the buyers a worker holds, and ranks refreshed from them."""

    __slots__ = ("_hist", "_ranks", "_total", "_snapshot_total", "_changes")

    def __init__(self) -> None:
        self._hist: tuple[Counter[int], Counter[int], Counter[int]] = (Counter(), Counter(), Counter())
        self._ranks: tuple[tuple[list[int], list[int]], ...] = ()
        self._total = 0
        self._snapshot_total = 0
        self._changes = 0

    def __len__(self) -> int:
        return self._total

    def replace(self, old: RfmInputs | None, new: RfmInputs | None) -> None:
        """Take a user's contribution ``old`` out and ``new`` in (either may be ``None``)."""
        if old == new:
            return
        for inputs, step in ((old, -1), (new, 1)):
            if inputs is None:
                continue
            for hist, bin_ in zip(self._hist, inputs.bins(), strict=True):
                hist[bin_] += step
                if not hist[bin_]:
                    del hist[bin_]
            self._total += step
        self._changes += 1
        if self._changes >= max(1, self._total // 100):
            self._refresh()

    def score(self, inputs: RfmInputs | None) -> str:
        """Return ``"RFM"`` quintiles (1-5 each) of ``inputs``, or ``""`` for a non-buyer.

        A value's quintile is its mid-rank (users below it plus half of those
        in its bin) over the population at the last refresh, in fifths.
        """
        if inputs is None or not self._snapshot_total:
            return ""
        total = self._snapshot_total
        digits = []
        for (bins, below), bin_ in zip(self._ranks, inputs.bins(), strict=True):
            i = bisect_left(bins, bin_)
            under = below[i]
            same = below[i + 1] - under if i < len(bins) and bins[i] == bin_ else 0
            digits.append(str(1 + min(4, int(5 * (under + same / 2) / total))))
        return "".join(digits)

    def _refresh(self) -> None:
        self._changes = 0
        self._snapshot_total = self._total
        self._ranks = tuple(_ranks(hist) for hist in self._hist)


def _ranks(hist: Counter[int]) -> tuple[list[int], list[int]]:
    """Sorted bins and, per position, how many users lie in lower bins (one extra at the end)."""
    bins = sorted(hist)
    below = [0]
    for bin_ in bins:
        below.append(below[-1] + hist[bin_])
    return bins, below
