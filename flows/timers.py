"""Event-time timers in Bytewax: a per-worker timer wheel and a clock source that reads it.

Bytewax's ``notify_at`` is wall-clock time and scans every key that asked for
it on each activation, so it cannot carry a million users' event-time
deadlines. Instead (``docs/features.md``, "Timers"):

- the user step registers each user's earliest deadline in its worker's
  :class:`~segstream.operators.event_time.TimerWheel` and records every
  partition watermark it sees;
- :class:`ClockSource` wakes on each worker every ``interval_s``; the
  ``due_timers`` step right behind it pops the due users from that worker's
  wheel and sends each a :class:`~segstream.operators.event_time.Tick`,
  which is routed (by user key) back to the same worker's user step.

Both run on the worker's own thread, so a wheel is only ever touched by one
thread, and a tick always follows the events whose watermark it carries.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import DynamicSource, StatelessSourcePartition
from segstream.operators.event_time import Tick, TimerWheel

from segstream.health import HEALTH
from segstream.metrics import SEGMENT_MEMBERS, TIMER_TICKS, USERS_IN_STATE


@dataclass(slots=True)
class WorkerState:
    """What one worker keeps beside Bytewax state: its timer wheel.

    It is not in recovery snapshots: it is rebuilt from the users' snapshots
    when a worker resumes (Bytewax rebuilds every user at start-up).
    """

    lateness_s: float
    """Allowed lateness: a partition's watermark after an event is ``ts - lateness_s`` at most."""
    wheel: TimerWheel[Any] = field(default_factory=TimerWheel)
    """Deadlines of this worker's user steps (the steps are the wheel's owners)."""
    users_built: int = 0
    """Users built (new or resumed) since the gauges were last updated."""
    members_resumed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Memberships of resumed users, ``(kind, segment)``, not yet in the gauges."""

    def publish_counts(self) -> None:
        """Add what was counted while users were built to the gauges.

        A resume builds every user at once; one gauge call per user and
        membership costs seconds at a million users, one per segment does not.
        """
        if self.users_built:
            USERS_IN_STATE.inc(self.users_built)
            self.users_built = 0
        for (kind, segment), count in self.members_resumed.items():
            SEGMENT_MEMBERS.labels(kind, segment).inc(count)
        self.members_resumed.clear()


class WorkerStates:
    """The worker states of one dataflow, one per worker thread (not shared between flows)."""

    def __init__(self, lateness_s: float) -> None:
        self._lateness_s = lateness_s
        self._by_thread: dict[int, WorkerState] = {}
        self._lock = threading.Lock()

    def mine(self) -> WorkerState:
        """Return the calling worker thread's state."""
        ident = threading.get_ident()
        state = self._by_thread.get(ident)
        if state is None:
            with self._lock:
                state = self._by_thread.setdefault(ident, WorkerState(self._lateness_s))
        return state

    def due_ticks(self, _polls: list[None]) -> list[tuple[str, Tick]]:
        """Pop this worker's due users as ``(user key, Tick)`` (the ``due_timers`` step)."""
        worker = self.mine()
        worker.publish_counts()
        due = worker.wheel.due()
        if due:
            TIMER_TICKS.inc(len(due))
        return [(step.key, tick) for step, tick in due]


CLOCK_WAKE_S = 0.02
"""How often a clock partition wakes, even when no tick is due.

Bytewax closes an epoch only when every input has moved on to the next one,
and an input moves on when it is woken. A clock that slept ``timer_tick_s``
(0.2 s) held every epoch close back: the Kafka input stalled for 0.2-0.5 s
every ``snapshot_interval_s``, which was most of the p99 latency at 1,500
events/s on Tansu. Waking every 20 ms to return nothing costs next to no CPU.
"""


class _ClockPartition(StatelessSourcePartition[None]):
    def __init__(self, interval: timedelta, wake: timedelta) -> None:
        self._interval, self._wake = interval, wake
        now = datetime.now(UTC)
        self._due = now  # the first tick comes at once
        self._next = now

    def next_batch(self) -> list[None]:
        HEALTH.beat()  # the worker's dataflow moves (segstream.health)
        now = datetime.now(UTC)
        self._next = now + self._wake
        if now < self._due:
            return []
        self._due = now + self._interval
        return [None]

    def next_awake(self) -> datetime:
        return self._next


class ClockSource(DynamicSource[None]):
    """Emits one ``None`` per worker every ``interval_s`` seconds, forever.

    It wakes at least every :data:`CLOCK_WAKE_S` (emitting nothing in between)
    so that it never holds an epoch close back.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval = timedelta(seconds=interval_s)
        self._wake = timedelta(seconds=min(interval_s, CLOCK_WAKE_S))

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ClockPartition:
        """Create this worker's clock."""
        return _ClockPartition(self._interval, self._wake)
