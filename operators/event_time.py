"""Event time: per-partition watermarks, the items the user step receives, and its timer wheel.

- :class:`PartitionWatermark`: ``W = largest event time read so far - allowed
  lateness``, advanced in partition order by the ``parse`` step; an event
  older than ``W`` (before it) is *late*.
- :class:`Stamped`: an event with the watermark of its partition just before
  it; :class:`Tick`: a wake-up carrying a newer watermark for a user with a
  due timer. These two are what the keyed user step consumes.
- :class:`TimerWheel`: one per worker; remembers each user's earliest deadline
  and the latest watermark seen per partition, and says whom to wake.

>>> clock = PartitionWatermark(lateness_s=10.0)
>>> clock.observe(100.0), clock.observe(95.0), clock.observe(80.0)
(-inf, 90.0, 90.0)
>>> clock.is_late(80.0, 90.0)
True
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import NamedTuple

from segstream.operators.events import Event
from segstream.state.profile import NO_WATERMARK


@dataclass(slots=True)
class PartitionWatermark:
    """The watermark of one input partition.

    Attributes:
        lateness_s: allowed lateness.
        newest: largest event time read so far (``-inf`` before any).

    """

    lateness_s: float
    newest: float = NO_WATERMARK

    @property
    def watermark(self) -> float:
        """``newest - lateness_s``."""
        return self.newest - self.lateness_s

    def observe(self, ts: float) -> float:
        """Take one event time (in partition order); return the watermark *before* it."""
        before = self.newest - self.lateness_s
        if ts > self.newest:
            self.newest = ts
        return before

    @staticmethod
    def is_late(ts: float, watermark_before: float) -> bool:
        """Whether an event at ``ts`` is beyond the allowed lateness."""
        return ts < watermark_before


class Stamped(NamedTuple):
    """An on-time (or ``apply``-policy late) event on its way to the user step.

    Attributes:
        event: the event.
        watermark: its partition's watermark just before it.
        clock: its partition, ``topic:partition``.

    """

    event: Event
    watermark: float
    clock: str


class Tick(NamedTuple):
    """A wake-up for one user: their partition's watermark moved past a deadline.

    Attributes:
        watermark: the partition's watermark the worker has seen.
        clock: the partition.

    """

    watermark: float
    clock: str


@dataclass(slots=True)
class TimerWheel:
    """Per-worker index of users' earliest deadlines, woken by partition watermarks.

    Only the latest deadline registered for a key counts; superseded heap
    entries are skipped when popped and purged when they outnumber live ones.
    Every user has an entry (eviction is a timer), so it is kept lean: one
    float per user in a dict per partition, shared with its heap entry.

    >>> wheel = TimerWheel()
    >>> wheel.schedule("u1", "clicks:0", 100.0)
    >>> wheel.schedule("u2", "clicks:0", 300.0)
    >>> wheel.observe("clicks:0", 150.0)
    >>> wheel.due()
    [('u1', Tick(watermark=150.0, clock='clicks:0'))]
    >>> wheel.due(), wheel.deadline("u2")
    ([], (300.0, 'clicks:0'))
    """

    watermarks: dict[str, float] = field(default_factory=dict)
    _deadlines: dict[str, dict[str, float]] = field(default_factory=dict)  # clock -> key -> deadline
    _heap: list[tuple[float, str, str]] = field(default_factory=list)  # (deadline, key, clock)
    _live: int = 0

    def schedule(self, key: str, clock: str, deadline: float | None) -> None:
        """Set (or with ``None`` clear) the earliest deadline of ``key``."""
        mine = self._deadlines.get(clock)
        if mine is not None and deadline is not None and mine.get(key) == deadline:
            return
        for other in self._deadlines.values():  # a handful of partitions per worker
            if other.pop(key, None) is not None:
                self._live -= 1
                break
        if deadline is None:
            return
        if mine is None:
            mine = self._deadlines[clock] = {}
        mine[key] = deadline
        self._live += 1
        heapq.heappush(self._heap, (deadline, key, clock))
        if len(self._heap) > 2 * self._live + 1024:
            self._heap = [(d, k, c) for c, keys in self._deadlines.items() for k, d in keys.items()]
            heapq.heapify(self._heap)

    def deadline(self, key: str) -> tuple[float, str] | None:
        """Return the registered ``(deadline, clock)`` of ``key``, if any."""
        for clock, keys in self._deadlines.items():
            found = keys.get(key)
            if found is not None:
                return found, clock
        return None

    def observe(self, clock: str, watermark: float) -> None:
        """Record that ``clock``'s watermark reached ``watermark``."""
        if watermark > self.watermarks.get(clock, NO_WATERMARK):
            self.watermarks[clock] = watermark

    def due(self) -> list[tuple[str, Tick]]:
        """Pop the keys whose deadline is below their partition's watermark."""
        out = []
        heap = self._heap
        waiting: list[tuple[float, str, str]] = []
        highest = max(self.watermarks.values(), default=NO_WATERMARK)
        while heap and heap[0][0] < highest:
            entry = heapq.heappop(heap)
            deadline, key, clock = entry
            keys = self._deadlines.get(clock)
            if keys is None or keys.get(key) != deadline:
                continue  # superseded
            watermark = self.watermarks.get(clock, NO_WATERMARK)
            if deadline < watermark:
                del keys[key]
                self._live -= 1
                out.append((key, Tick(watermark, clock)))
            else:  # its own partition lags behind the most advanced one
                waiting.append(entry)
        for entry in waiting:
            heapq.heappush(heap, entry)
        return out

    def __len__(self) -> int:
        return self._live
