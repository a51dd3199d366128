"""Budgets for what the flow holds per user around the state bytes.

The ≤ 1 KB per user target (benchmarks/RESULTS.md) leaves about 200 B for the
Python objects around a user's state once Bytewax's own per-key entry (about
125 B) is paid. ``tracemalloc`` counts are deterministic, so these are budget
tests, not speed tests: they fail if a change brings back a per-user heap
entry, a separate shim or a key string.
"""

from __future__ import annotations

import random
import tracemalloc

from benchmarks.state_memory import python_side
from segstream.operators.event_time import TimerWheel


class _Owner:
    __slots__ = ("clock", "deadline")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.clock = ""


def test_user_step_objects_stay_within_budget() -> None:
    side = python_side(3000, traced=3000)
    # The user step (120 B), its deadline (24 B) and small change (about 20 B);
    # a key string or a separate shim would add 60 to 90 B.
    around_state = side["total"] - side["state_bytes_object"] - side["timer_wheel"]
    assert around_state <= 190, (around_state, side)


def test_timer_wheel_costs_a_pointer_or_so_per_user() -> None:
    owners = [_Owner() for _ in range(50_000)]
    rng = random.Random(1)
    # A day of deadlines, each user rescheduled twice (the floats are the owners').
    deadlines = [[1.7e9 + rng.uniform(0, 86400) for _ in range(3)] for _ in owners]
    tracemalloc.start()
    wheel: TimerWheel[_Owner] = TimerWheel()
    for owner, mine in zip(owners, deadlines, strict=True):
        for deadline in mine:
            wheel.schedule(owner, "clicks:0", deadline)
    per_user = tracemalloc.get_traced_memory()[0] / len(owners)
    tracemalloc.stop()
    assert len(wheel) == len(owners)
    assert per_user <= 40, per_user
