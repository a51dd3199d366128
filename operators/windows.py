"""Rolling event-time windows as sparse bucketed counters (never lists of events).

A horizon ``H`` (``"1h"``, ``"7d"``) is counted at a resolution ``r``: the largest
of 60 s, 300 s, 3600 s, 86400 s that divides ``H`` at least 7 times. Buckets are
indexed ``floor(t / r)``; an event at ``t`` is in the ``H`` window at time ``T``
when ``b(T) - H/r < b(t) <= b(T)``. Horizons at the same resolution share one
sparse list of buckets, so a user costs one small list per resolution, holding
only buckets that had events, dropped once older than the longest horizon at
that resolution.

A bucket is ``[index, product_view, search, add_to_cart, checkout, purchase,
revenue, sessions]``; ``sessions`` counts session starts (``sessions_{horizon}``).

>>> layout = WindowLayout.build(("1h", "24h", "7d", "30d"))
>>> [spec.resolution for spec in layout.horizons]
[300, 3600, 86400, 86400]
>>> levels = layout.empty()
>>> layout.add(levels, 100.0, "product_view", 0.0)
>>> layout.add(levels, 4000.0, "purchase", 25.0)
>>> layout.count(levels, layout.horizons[0], 4000.0, "product_view")  # bucket 0 is 13 buckets back
0
>>> layout.count(levels, layout.horizons[1], 4000.0, "product_view")
1
>>> layout.total(levels, DAY_WINDOWS[0], 4000.0, REVENUE)
25.0
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

RESOLUTIONS: tuple[int, ...] = (60, 300, 3600, 86400)
"""Bucket widths a horizon may be counted at, in seconds."""

WINDOW_ROLES: tuple[str, ...] = ("product_view", "search", "add_to_cart", "checkout", "purchase")
"""Roles that have rolling counts (``{role}_{horizon}`` features)."""

ROLE_SLOTS: dict[str, int] = {role: i + 1 for i, role in enumerate(WINDOW_ROLES)}
"""Position of each role's count in a bucket (0 is the bucket index)."""

REVENUE = len(WINDOW_ROLES) + 1
"""Position of the revenue sum in a bucket."""

SESSION = "session"
"""Pseudo-role counted when a session starts (not a taxonomy role)."""

SESSION_SLOT = REVENUE + 1
"""Position of the session-start count in a bucket."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> int:
    """Parse ``"90s"``, ``"10m"``, ``"24h"`` or ``"7d"`` into seconds.

    >>> parse_duration("10m"), parse_duration("7d")
    (600, 604800)

    Raises:
        ValueError: the text is not a whole number with one of the units s, m, h, d.

    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected a duration like 90s, 10m, 24h or 7d, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One rolling horizon.

    Attributes:
        name: as written in config and in feature names (``"24h"``).
        seconds: the horizon.
        resolution: bucket width it is counted at.
        span: buckets it covers (``seconds / resolution``).

    """

    name: str
    seconds: int
    resolution: int
    span: int

    @classmethod
    def parse(cls, name: str) -> WindowSpec:
        """Build a horizon from its name, choosing its resolution.

        Raises:
            ValueError: not a duration, or not countable at any resolution.

        """
        seconds = parse_duration(name)
        for resolution in reversed(RESOLUTIONS):
            if seconds % resolution == 0 and seconds // resolution >= 7:
                return cls(name.strip(), seconds, resolution, seconds // resolution)
        raise ValueError(
            f"horizon {name!r} must be a multiple of 1m and at least 7m, e.g. 1h, 24h, 7d"
        )


DAY_WINDOWS: tuple[WindowSpec, WindowSpec] = (WindowSpec.parse("30d"), WindowSpec.parse("90d"))
"""The frequency/monetary horizons (``purchases_30d``, ``revenue_90d``...)."""


@dataclass(frozen=True, slots=True)
class WindowLayout:
    """The resolutions a user's buckets are kept at, and for how long.

    Attributes:
        horizons: the role-count horizons, in configured order.
        resolutions: distinct bucket widths, finest first (always includes a day).
        keep: buckets kept per resolution (the longest span at that width).

    """

    horizons: tuple[WindowSpec, ...]
    resolutions: tuple[int, ...]
    keep: tuple[int, ...]
    nested: tuple[tuple[tuple[int, int], ...], ...] = ()
    """Per resolution, ``(span, index in (*horizons, *DAY_WINDOWS))`` by span (for :meth:`sums`)."""

    @classmethod
    def build(cls, horizons: Sequence[str]) -> WindowLayout:
        """Lay out buckets for the role horizons plus the 30/90-day F/M windows.

        Raises:
            ValueError: a horizon is not a valid duration or is listed twice.

        """
        specs = tuple(WindowSpec.parse(name) for name in horizons)
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"horizons must be unique, got {names}")
        keep: dict[int, int] = {}
        for spec in (*specs, *DAY_WINDOWS):
            keep[spec.resolution] = max(keep.get(spec.resolution, 0), spec.span)
        resolutions = tuple(sorted(keep))
        every = (*specs, *DAY_WINDOWS)
        nested = tuple(
            tuple(sorted((spec.span, i) for i, spec in enumerate(every) if spec.resolution == r))
            for r in resolutions
        )
        return cls(specs, resolutions, tuple(keep[r] for r in resolutions), nested)

    @property
    def _every(self) -> tuple[WindowSpec, ...]:
        return (*self.horizons, *DAY_WINDOWS)

    @property
    def coarsest(self) -> int:
        """Index of the day level (late events are counted there only)."""
        return len(self.resolutions) - 1

    def empty(self) -> list[list[list[float]]]:
        """Return empty buckets: one list per resolution."""
        return [[] for _ in self.resolutions]

    def add(
        self, levels: list[list[list[float]]], ts: float, role: str | None, revenue: float,
        *, coarsest_only: bool = False,
    ) -> None:
        """Count one event at ``ts`` in every resolution (or only the day one).

        Events of roles without windows change nothing. Buckets that fell out of
        the kept range of ``ts`` are dropped first; so with in-order input the
        lists stay short, and an out-of-range ``ts`` (a late event) is ignored.
        """
        slot = SESSION_SLOT if role == SESSION else ROLE_SLOTS.get(role) if role is not None else None
        if slot is None:
            return
        first = self.coarsest if coarsest_only else 0
        for level in range(first, len(self.resolutions)):
            resolution = self.resolutions[level]
            buckets = levels[level]
            index = int(ts // resolution)
            newest = max(index, int(buckets[-1][0])) if buckets else index
            cutoff = newest - self.keep[level]
            if index <= cutoff:
                continue
            _drop_before(buckets, cutoff)
            bucket = _bucket(buckets, index)
            bucket[slot] += 1
            if slot == ROLE_SLOTS["purchase"]:
                bucket[REVENUE] += revenue

    def count(
        self, levels: list[list[list[float]]], spec: WindowSpec, at: float, role: str
    ) -> int:
        """Events of ``role`` in the ``spec`` window at time ``at``."""
        return int(self.total(levels, spec, at, ROLE_SLOTS[role]))

    def total(
        self, levels: list[list[list[float]]], spec: WindowSpec, at: float, slot: int
    ) -> float:
        """Sum of bucket position ``slot`` over the ``spec`` window at time ``at``."""
        buckets = levels[self.resolutions.index(spec.resolution)]
        newest = int(at // spec.resolution)
        oldest = newest - spec.span
        total = 0.0
        for bucket in reversed(buckets):
            index = bucket[0]
            if index <= oldest:
                break
            if index <= newest:
                total += bucket[slot]
        return total


    def sums(self, levels: list[list[list[float]]], at: float) -> list[list[float]]:
        """Bucket sums of every role horizon, then of :data:`DAY_WINDOWS`, at time ``at``.

        One pass per resolution, newest bucket first, with the horizons at that
        resolution nested by span. Each result is a bucket-shaped list (position
        0 unused), in the order ``(*horizons, *DAY_WINDOWS)``.
        """
        out: list[list[float]] = [[] for _ in range(len(self.horizons) + len(DAY_WINDOWS))]
        for level, resolution in enumerate(self.resolutions):
            nested = self.nested[level]
            newest = int(at // resolution)
            running = [0.0] * (SESSION_SLOT + 1)
            j = 0
            for bucket in reversed(levels[level]) if levels else ():
                age = newest - bucket[0]
                if age < 0:
                    continue
                while j < len(nested) and age >= nested[j][0]:
                    out[nested[j][1]] = running[:]
                    j += 1
                if j == len(nested):
                    break
                running = [a + b for a, b in zip(running, bucket, strict=True)]
            for _span, i in nested[j:]:
                out[i] = running[:]
        return out

    def next_change(self, levels: list[list[list[float]]], at: float,
                    horizons: Collection[str] | None = None) -> float | None:
        """Return the earliest time after ``at`` when a window's sums change with no new event.

        That is when the oldest bucket inside some window leaves it (or a bucket
        ahead of ``at`` enters); ``None`` if every window is empty and stays so.
        ``horizons``: only those windows (by name, ``"7d"``, ``"90d"``...).

        >>> layout = WindowLayout.build(("1h",))
        >>> levels = layout.empty()
        >>> layout.add(levels, 100.0, "product_view", 0.0)
        >>> layout.next_change(levels, 200.0)  # bucket 0 leaves the 1h window at 12 * 300 s
        3600.0
        """
        best: float | None = None
        for level, resolution in enumerate(self.resolutions):
            buckets = levels[level] if levels else ()
            if not buckets:
                continue
            newest = int(at // resolution)
            candidates = []
            ahead = next((int(b[0]) for b in buckets if b[0] > newest), None)
            if ahead is not None:  # a bucket after ``at`` enters when it starts
                candidates.append(float(ahead * resolution))
            for span, i in self.nested[level]:
                if horizons is not None and self._every[i].name not in horizons:
                    continue
                oldest = next((int(b[0]) for b in buckets if newest - span < b[0] <= newest), None)
                if oldest is not None:  # the oldest bucket inside leaves
                    candidates.append(float((oldest + span) * resolution))
            for due in candidates:
                if due > at and (best is None or due < best):
                    best = due
        return best


def _drop_before(buckets: list[list[float]], cutoff: int) -> None:
    drop = 0
    while drop < len(buckets) and buckets[drop][0] <= cutoff:
        drop += 1
    if drop:
        del buckets[:drop]


def _bucket(buckets: list[list[float]], index: int) -> list[float]:
    """Return the bucket ``index``, inserting it in order if missing."""
    if buckets and buckets[-1][0] == index:
        return buckets[-1]
    position = len(buckets)
    while position and buckets[position - 1][0] > index:
        position -= 1
    if position and buckets[position - 1][0] == index:
        return buckets[position - 1]
    bucket: list[float] = [index, 0, 0, 0, 0, 0, 0.0, 0]
    buckets.insert(position, bucket)
    return bucket
