"""The clock source: ticks every ``interval_s``, wakes far more often so epochs can close."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import TestingSink, run_main
from segstream.flows.timers import CLOCK_WAKE_S, ClockSource


def test_the_clock_ticks_once_per_interval_but_wakes_every_few_milliseconds() -> None:
    clock = ClockSource(0.3).build("clock", 0, 1)
    assert clock.next_batch() == [None]  # the first tick comes at once
    woken = 0
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        # Woken again within CLOCK_WAKE_S, not at the next tick: an input that
        # sleeps holds back every epoch close of the dataflow.
        assert clock.next_awake() - datetime.now(UTC) <= timedelta(seconds=CLOCK_WAKE_S)
        assert clock.next_batch() == []
        woken += 1
        time.sleep(CLOCK_WAKE_S)
    assert woken >= 5
    time.sleep(0.15)
    assert clock.next_batch() == [None]
    assert clock.next_batch() == []


def test_a_clock_faster_than_the_wake_period_ticks_at_its_own_pace() -> None:
    clock = ClockSource(0.005).build("clock", 0, 1)
    assert clock.next_batch() == [None]
    time.sleep(0.006)
    assert clock.next_batch() == [None]
    assert clock.next_awake() - datetime.now(UTC) <= timedelta(seconds=0.005)


class _Polled(StatelessSourcePartition[int]):
    """A source that is always ready, recording when it is polled, for ``seconds``."""

    def __init__(self, polls: list[float], seconds: float) -> None:
        self._polls, self._end = polls, time.monotonic() + seconds

    def next_batch(self) -> list[int]:
        now = time.monotonic()
        if now > self._end:
            raise StopIteration
        self._polls.append(now)
        time.sleep(0.002)
        return [1]


class _PolledSource(DynamicSource[int]):
    def __init__(self, polls: list[float], seconds: float) -> None:
        self._polls, self._seconds = polls, seconds

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Polled:
        return _Polled(self._polls, self._seconds)


def test_a_slow_clock_never_stalls_the_other_input_at_an_epoch_close() -> None:
    """Bytewax holds an input at an epoch close until every input reached it."""
    polls: list[float] = []
    end = time.monotonic() + 2.0

    def stop_after_the_events(tick: None) -> int:
        if time.monotonic() > end + 0.2:  # the clock never ends by itself
            raise RuntimeError("stop the clock")
        return 0

    flow = Dataflow("clock_and_events")
    events = op.input("events", flow, _PolledSource(polls, 2.0))
    ticks = op.map("stop", op.input("clock", flow, ClockSource(1.0)), stop_after_the_events)
    op.output("out", op.merge("both", events, ticks), TestingSink([]))
    with pytest.raises(RuntimeError) as stopped:
        run_main(flow, epoch_interval=timedelta(seconds=0.1))
    causes = []
    error: BaseException | None = stopped.value
    while error is not None:
        causes.append(str(error))
        error = error.__cause__
    assert "stop the clock" in causes
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    # Polled about every 2 ms; held at each close for up to the clock's 1 s before the fix.
    assert len(gaps) > 100
    assert max(gaps) < 0.4, f"the events input waited {max(gaps):.3f} s for the clock"
