"""Event time: per-partition watermarks, the items the user step receives, and its timer wheel.

- :class:`PartitionWatermark`: ``W = largest event time read so far - allowed
  lateness``, advanced in partition order by the ``parse`` step; an event
  older than ``W`` (before it) is *late*.
- :class:`Stamped`: an event with the watermark of its partition just before
  it; :class:`Tick`: a wake-up carrying a newer watermark for a user with a
  due timer. These two are what the keyed user step consumes.
- :class:`TimerWheel`: one per worker; indexes each user's earliest deadline
  and the latest watermark seen per partition, and says whom to wake.

>>> clock = PartitionWatermark(lateness_s=10.0)
>>> clock.observe(100.0), clock.observe(95.0), clock.observe(80.0)
(-inf, 90.0, 90.0)
>>> clock.is_late(80.0, 90.0)
True
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from segstream.state.profile import NO_WATERMARK, Fact

OwnerT = TypeVar("OwnerT", bound="TimerOwner")


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

    It carries what the user's timeline keeps of the event (a :class:`Fact`),
    not the parsed :class:`Event`: in a cluster about half the events cross to
    another process, and pickling an event with its payload's dicts cost 12 µs
    against 3.6 µs for the fact (``benchmarks/RESULTS.md``). Build one with
    :func:`segstream.operators.features.stamp_event`.

    Attributes:
        key: the user key (``userId``, else ``anonymousId``).
        fact: the event as the timeline keeps it.
        watermark: its partition's watermark just before it.
        clock: its partition, ``topic:partition``.

    """

    key: str
    fact: Fact
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


class TimerOwner(Protocol):
    """What the wheel keeps per user: the owner itself, with its registration on it.

    The wheel writes both attributes (:meth:`TimerWheel.schedule` sets them,
    :meth:`TimerWheel.due` clears ``deadline`` of what it fires); the owner
    only reads them.
    """

    deadline: float | None
    clock: str


BUCKET_S = 300.0
"""Width of a wheel bucket in event time: one list per partition and 5 minutes of deadlines."""


class TimerWheel(Generic[OwnerT]):
    """Per-worker index of users' earliest deadlines, woken by partition watermarks.

    Every user has a deadline (eviction is a timer), so a million of them must
    cost little: the wheel holds no per-user entry of its own but appends the
    owner (one pointer) to the list of its ``(partition, 5-minute bucket)``.
    The registration lives on the owner (``deadline``, ``clock``), which is how
    an entry left behind by a rescheduled owner is recognised and skipped.
    Each bucket is popped from a heap at a lower bound of its deadlines, so a
    watermark inside a bucket fires exactly the owners it passed; left-behind
    entries are dropped when their bucket is read and purged when they
    outnumber live ones.

    >>> class User:
    ...     def __init__(self, name): self.name, self.deadline, self.clock = name, None, ""
    ...     def __repr__(self): return self.name
    >>> u1, u2 = User("u1"), User("u2")
    >>> wheel = TimerWheel()
    >>> wheel.schedule(u1, "clicks:0", 100.0)
    >>> wheel.schedule(u2, "clicks:0", 300.0)
    >>> wheel.observe("clicks:0", 150.0)
    >>> wheel.due()
    [(u1, Tick(watermark=150.0, clock='clicks:0'))]
    >>> wheel.due(), u1.deadline, u2.deadline
    ([], None, 300.0)
    """

    def __init__(self) -> None:
        self.watermarks: dict[str, float] = {}
        self._clocks: dict[str, str] = {}  # one string per partition, shared by its owners
        # (clock, bucket) -> [lower bound of its live deadlines, owners]
        self._buckets: dict[tuple[str, int], list[Any]] = {}
        self._heap: list[tuple[float, int, str]] = []  # (lower bound, bucket, clock)
        self._live = 0
        self._entries = 0

    def schedule(self, owner: OwnerT, clock: str, deadline: float | None) -> None:
        """Set (or with ``None`` clear) the earliest deadline of ``owner``."""
        before = owner.deadline
        if before is not None:
            if deadline is None:
                self._live -= 1
            elif owner.clock == clock and before // BUCKET_S == deadline // BUCKET_S:
                owner.deadline = deadline  # same bucket: its entry stays valid
                if deadline < before:
                    self._lower(self._buckets[(owner.clock, int(deadline // BUCKET_S))],
                                deadline, owner.clock, int(deadline // BUCKET_S))
                return
        elif deadline is not None:
            self._live += 1
        owner.deadline = deadline
        if deadline is None:
            return
        owner.clock = clock = self._clocks.setdefault(clock, clock)
        self._add(owner, clock, deadline)
        if self._entries > 2 * self._live + 1024:
            self._purge()

    def observe(self, clock: str, watermark: float) -> None:
        """Record that ``clock``'s watermark reached ``watermark``."""
        if watermark > self.watermarks.get(clock, NO_WATERMARK):
            self.watermarks[clock] = watermark

    def due(self) -> list[tuple[OwnerT, Tick]]:
        """Pop the owners whose deadline is below their partition's watermark."""
        out: list[tuple[OwnerT, Tick]] = []
        heap, buckets = self._heap, self._buckets
        waiting: list[tuple[float, int, str]] = []
        highest = max(self.watermarks.values(), default=NO_WATERMARK)
        while heap and heap[0][0] < highest:
            entry = heapq.heappop(heap)
            bound, bucket, clock = entry
            found = buckets.get((clock, bucket))
            if found is None or found[0] != bound:
                continue  # a newer, lower bound of this bucket was pushed, or it is gone
            watermark = self.watermarks.get(clock, NO_WATERMARK)
            if bound >= watermark:  # its own partition lags behind the most advanced one
                waiting.append(entry)
                continue
            tick = Tick(watermark, clock)
            kept: list[OwnerT] = []
            lowest = float("inf")
            for owner in found[1]:
                deadline = owner.deadline
                if deadline is None or owner.clock != clock or deadline // BUCKET_S != bucket:
                    continue  # left behind by a rescheduling, or already fired
                if deadline < watermark:
                    owner.deadline = None
                    self._live -= 1
                    out.append((owner, tick))
                else:
                    kept.append(owner)
                    lowest = min(lowest, deadline)
            self._entries -= len(found[1]) - len(kept)
            if kept:
                buckets[(clock, bucket)] = [lowest, kept]
                heapq.heappush(heap, (lowest, bucket, clock))
            else:
                del buckets[(clock, bucket)]
        for entry in waiting:
            heapq.heappush(heap, entry)
        return out

    def __len__(self) -> int:
        """Return the number of owners with a deadline."""
        return self._live

    def _add(self, owner: OwnerT, clock: str, deadline: float) -> None:
        bucket = int(deadline // BUCKET_S)
        found = self._buckets.get((clock, bucket))
        self._entries += 1
        if found is None:
            self._buckets[(clock, bucket)] = [deadline, [owner]]
            heapq.heappush(self._heap, (deadline, bucket, clock))
        else:
            found[1].append(owner)
            self._lower(found, deadline, clock, bucket)

    def _lower(self, found: list[Any], deadline: float, clock: str, bucket: int) -> None:
        if deadline < found[0]:
            found[0] = deadline
            heapq.heappush(self._heap, (deadline, bucket, clock))

    def _purge(self) -> None:
        """Drop the entries left behind by rescheduled owners (each live owner kept once)."""
        live: dict[int, OwnerT] = {}
        for (clock, bucket), (_, owners) in self._buckets.items():
            for owner in owners:
                deadline = owner.deadline
                if (deadline is not None and owner.clock == clock
                        and deadline // BUCKET_S == bucket):
                    live[id(owner)] = owner
        self._buckets, self._heap, self._entries = {}, [], 0
        for owner in live.values():
            self._add(owner, owner.clock, owner.deadline)  # type: ignore[arg-type]
