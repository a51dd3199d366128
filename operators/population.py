"""Population statistics for dynamic thresholds: ``p90(x)``, ``mean(x)``, ``std(x)`` over live users.

The population of a feature is the users in state whose value of it is present
and non-zero, each counted once with their value as of their latest update (an
event or a timer). Non-zero, because a population of non-buyers would pin every
monetary percentile at 0: ``p90(revenue_30d)`` means "the top tenth of spenders".

Each user step adds its user's value and takes the previous one out
(:meth:`Population.replace`), so the aggregates are of live users only, and an
evicted user leaves them. Per feature the aggregates are:

- the count, sum and sum of squares of the values in fixed point (micro-units,
  as Python ints): exact under any number of adds and removals, so ``mean``
  and ``std`` never drift (values are clipped to +-:data:`MAX_MAGNITUDE`, far
  beyond what the parser's bounds admit, so they stay finite);
- a histogram in logarithmic bins 2 % wide (DDSketch's layout, with removals):
  a percentile is within 1 % of the value of the same rank. Timestamps
  (``last_seen``...) are binned by the hour instead: a logarithmic bin of an
  epoch time is about 400 days wide.

The histograms also rank a user against the population (:meth:`Population.rank`),
which the RFM score reads (``operators/rfm.py``).

The aggregates are plain sums, so they merge across processes by adding them:
each process publishes its own (:meth:`partial`) and adds the others'
(:meth:`set_remote`); see ``flows/population.py`` for the exchange and how stale
it lets a threshold be.

>>> population = Population(("aov_90d",))
>>> for value in (10.0, 20.0, 30.0, 0.0):
...     population.replace(None, population.contribution({"aov_90d": value}))
>>> population.stat("mean", "aov_90d"), round(population.stat("std", "aov_90d"), 6)
(20.0, 8.164966)
>>> abs(population.stat("p50", "aov_90d") - 20.0) <= 0.01 * 20.0  # within 1 % of the median
True
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

SCALE = 1_000_000
"""Fixed-point scale of sums: values count to the micro-unit."""

MAX_MAGNITUDE = 1e18
"""Values are clipped to +-this before they enter the aggregates.

The parser bounds every amount (``max_revenue``...), so no real feature comes
near it: it is the last guard that keeps the sums and the statistics finite
(``round(1e303 * SCALE)`` overflowed) whatever a caller adds. A value and its
removal clip alike, so the sums stay exact.
"""

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)

Contribution = tuple[float | None, ...]
"""One user's values of the tracked features (``None``: not in that feature's population)."""


class Bins:
    """How a feature's values map to histogram bins, and bins back to values and order."""

    __slots__ = ("width",)

    def __init__(self, width: float | None = None) -> None:
        """Logarithmic bins 2 % wide (``width`` ``None``), or linear bins ``width`` wide."""
        self.width = width

    @property
    def tag(self) -> str:
        """Names the binning in exchanged aggregates (only equal binnings merge)."""
        return "log" if self.width is None else f"linear:{self.width:g}"

    def bin_of(self, value: float) -> int:
        """Return the bin of a non-zero value.

        Logarithmic: positive values map to ``2 * k``, negative ones to ``2 * k + 1``
        where ``k`` is the bin of the magnitude, so one ``Counter`` holds both.

        >>> LOG.bin_of(1.0), LOG.bin_of(-1.0), Bins(3600.0).bin_of(7300.0)
        (0, 1, 2)
        """
        if self.width is not None:
            return math.floor(value / self.width)
        k = math.ceil(math.log(abs(value)) / _LOG_GAMMA)
        return 2 * k + (1 if value < 0 else 0)

    def value_of(self, bin_: int) -> float:
        """Return the representative value of a bin (logarithmic: within 1 % of every value in it)."""
        if self.width is not None:
            return (bin_ + 0.5) * self.width
        k, negative = divmod(bin_, 2)
        magnitude = 2 * GAMMA**k / (GAMMA + 1)
        return -magnitude if negative else magnitude

    def order(self, bin_: int) -> tuple[int, int]:
        """Sort key of bins by value; ``ZERO`` sorts between the negative and positive bins."""
        if self.width is not None:
            return (0 if bin_ < 0 else 2, bin_)
        k, negative = divmod(bin_, 2)
        return (0, -k) if negative else (2, k)


ZERO = (1, 0)
"""Sort key of the value 0, which is in no population: after every negative bin, before
every positive one."""

LOG = Bins()
TIMESTAMP_BIN_S = 3600.0
"""Width of the bins of timestamp features."""


class FeatureAggregate:
    """Count, exact fixed-point sums and histogram of one feature's population."""

    __slots__ = ("bins", "count", "total", "squares", "hist")

    def __init__(self, bins: Bins = LOG) -> None:
        self.bins = bins
        self.count = 0
        self.total = 0
        self.squares = 0
        self.hist: Counter[int] = Counter()

    def add(self, value: float, step: int) -> None:
        """Add (``step`` 1) or remove (``step`` -1) one (finite) value, clipped to :data:`MAX_MAGNITUDE`."""
        value = min(max(value, -MAX_MAGNITUDE), MAX_MAGNITUDE)
        fixed = round(value * SCALE)
        self.count += step
        self.total += step * fixed
        self.squares += step * fixed * fixed
        bin_ = self.bins.bin_of(value)
        self.hist[bin_] += step
        if not self.hist[bin_]:
            del self.hist[bin_]

    def merge(self, other: FeatureAggregate) -> None:
        """Add ``other``'s values to these (binned alike)."""
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        self.hist.update(other.hist)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form; the sums are strings (they outgrow 64 bits)."""
        return {"count": self.count, "total": str(self.total), "squares": str(self.squares),
                "bins": self.bins.tag, "hist": {str(b): c for b, c in self.hist.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], bins: Bins = LOG) -> FeatureAggregate | None:
        """Rebuild from :meth:`to_json` output; ``None`` if it was binned otherwise than ``bins``."""
        if data.get("bins", LOG.tag) != bins.tag:
            return None
        out = cls(bins)
        out.count = int(data["count"])
        out.total = int(data["total"])
        out.squares = int(data["squares"])
        out.hist = Counter({int(b): int(c) for b, c in data["hist"].items()})
        return out


class _Summary:
    """Statistics read off an aggregate: exact mean and std, percentiles and ranks."""

    __slots__ = ("binning", "mean", "std", "bins", "orders", "below", "count")

    def __init__(self, agg: FeatureAggregate) -> None:
        binning = self.binning = agg.bins
        n = agg.count
        self.count = n
        self.mean = agg.total / n / SCALE if n > 0 else None
        # Exact in integers first: n * sum(x^2) - sum(x)^2 >= 0, then one division.
        self.std = (
            math.sqrt(max(0, n * agg.squares - agg.total * agg.total)) / n / SCALE if n > 0 else None
        )
        self.bins = sorted((b for b, c in agg.hist.items() if c > 0), key=binning.order)
        self.orders = [binning.order(b) for b in self.bins]
        below = [0]
        for b in self.bins:
            below.append(below[-1] + agg.hist[b])
        self.below = below

    def percentile(self, p: int) -> float | None:
        """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or below it."""
        n = self.below[-1]
        if n <= 0:
            return None
        rank = max(1, math.ceil(p * n / 100))
        i = bisect_left(self.below, rank) - 1
        return self.binning.value_of(self.bins[i])

    def rank(self, value: float) -> tuple[int, int]:
        """Return how many values lie in lower bins than ``value``, and how many in its bin."""
        if value == 0:
            i = bisect_left(self.orders, ZERO)
            return self.below[i], 0
        key = self.binning.order(self.binning.bin_of(value))
        i = bisect_left(self.orders, key)
        same = self.below[i + 1] - self.below[i] if i < len(self.orders) and self.orders[i] == key else 0
        return self.below[i], same


class Population:
    """Aggregates of the tracked features over this process's users, plus other processes'.

    Thread-safe: the workers of one process share it.
    """

    def __init__(self, features: Sequence[str], *, refresh_share: float = 0.01,
                 min_users: int = 1, bins: Mapping[str, Bins] | None = None) -> None:
        """Track ``features`` (the ones some expression reads the population of).

        A statistic is unknown (``None``: a condition reading it is false) while
        fewer than ``min_users`` users are in its feature's population: the
        mean + 2 SD of three buyers says nothing. ``bins``: a feature's binning
        if not logarithmic.
        """
        self.min_users = min_users
        self.features = tuple(features)
        self._bins = [(bins or {}).get(name, LOG) for name in self.features]
        self.layout = zlib.crc32(
            ";".join(f"{name}={b.tag}" for name, b in zip(self.features, self._bins, strict=True))
            .encode()
        )
        """Identifies the tracked features and their binning: a contribution kept in a
        user's state is only valid for the layout it was made for."""
        self._index = {name: i for i, name in enumerate(self.features)}
        self._local = [FeatureAggregate(b) for b in self._bins]
        self._remote = [FeatureAggregate(b) for b in self._bins]
        self._summaries: list[_Summary] = [_Summary(agg) for agg in self._local]
        self._changes = 0
        self._refresh_share = refresh_share
        self._lock = threading.Lock()

    def contribution(self, values: Mapping[str, Any]) -> Contribution | None:
        """Return what a user with feature ``values`` adds (``None`` if nothing)."""
        if not self.features:
            return None
        out = tuple(_member_value(values.get(name)) for name in self.features)
        return None if all(v is None for v in out) else out

    def replace(self, old: Contribution | None, new: Contribution | None) -> None:
        """Take a user's previous contribution out and their new one in."""
        if old == new:
            return
        with self._lock:
            for contribution, step in ((old, -1), (new, 1)):
                if contribution is None:
                    continue
                for agg, value in zip(self._local, contribution, strict=True):
                    if value is not None:
                        agg.add(value, step)
            self._changes += 1
            users = max((agg.count for agg in self._local), default=0)
            if self._changes >= max(1, int(users * self._refresh_share)):
                self._refresh()

    def stat(self, function: str, feature: str) -> float | None:
        """Return ``mean``, ``std`` or ``pNN`` of ``feature`` (``None``: no population yet).

        Read from summaries refreshed after each 1 % of the users changed (each
        change while under 100), and whenever other processes' aggregates arrive.
        """
        i = self._index.get(feature)
        if i is None:
            return None
        summary = self._summaries[i]
        if summary.count < self.min_users:
            return None
        if function == "mean":
            return summary.mean
        if function == "std":
            return summary.std
        return summary.percentile(int(function[1:]))

    def rank(self, feature: str, value: float | None) -> tuple[int, int, int] | None:
        """Return ``(below, same, users)`` of ``value`` in ``feature``'s population.

        Those are the users in lower bins than ``value``, in its bin, and in all
        (``None``: the feature is not tracked).

        A missing or zero value ranks below every positive value. As of the
        last refresh, like :meth:`stat`; ``min_users`` is the caller's to apply.

        >>> population = Population(("x",))
        >>> for value in (1.0, 2.0, 2.0, 3.0):
        ...     population.replace(None, (value,))
        >>> population.rank("x", 2.0), population.rank("x", 0.0)
        ((1, 2, 4), (0, 0, 4))
        """
        i = self._index.get(feature)
        if i is None:
            return None
        summary = self._summaries[i]
        below, same = summary.rank(value or 0.0)
        return below, same, summary.count

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        """Every statistic of every tracked feature, as of the last refresh (for metrics, Redis).

        Percentiles listed are p50, p90 and p99.
        """
        out = {}
        for name, summary in zip(self.features, self._summaries, strict=True):
            out[name] = {"users": float(summary.count), "mean": summary.mean, "std": summary.std,
                         **{f"p{p}": summary.percentile(p) for p in (50, 90, 99)}}
        return out

    def partial(self) -> dict[str, Any]:
        """Return this process's own aggregates, JSON-able, for the other processes."""
        with self._lock:
            return {name: agg.to_json() for name, agg in zip(self.features, self._local, strict=True)}

    def set_remote(self, partials: Sequence[Mapping[str, Any]]) -> None:
        """Replace the other processes' aggregates with ``partials`` and refresh."""
        remote = [FeatureAggregate(b) for b in self._bins]
        for partial in partials:
            for name, agg in zip(self.features, remote, strict=True):
                if name not in partial:
                    continue
                theirs = FeatureAggregate.from_json(partial[name], agg.bins)
                if theirs is None:
                    log.warning("population of %s from another process is binned as %s, here as "
                                "%s: left out (do all processes run the same version?)",
                                name, partial[name].get("bins"), agg.bins.tag)
                    continue
                agg.merge(theirs)
        with self._lock:
            self._remote = remote
            self._refresh()

    def _refresh(self) -> None:
        self._changes = 0
        summaries = []
        for local, remote in zip(self._local, self._remote, strict=True):
            merged = FeatureAggregate(local.bins)
            merged.merge(local)
            merged.merge(remote)
            summaries.append(_Summary(merged))
        self._summaries = summaries


def _member_value(value: Any) -> float | None:
    """Return what a user adds to a feature's population: a non-zero finite number, or nothing."""
    if value is None or value is True or value is False:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number == 0.0 or not math.isfinite(number):
        return None
    return number
