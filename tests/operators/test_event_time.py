"""Partition watermarks and the per-worker timer wheel."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from segstream.operators.event_time import PartitionWatermark, Tick, TimerWheel


@given(st.lists(st.floats(0, 1e6), max_size=50), st.floats(0, 1e4))
def test_watermark_is_newest_minus_lateness_and_never_falls(times: list, lateness: float) -> None:
    clock = PartitionWatermark(lateness)
    seen: list[float] = []
    previous = float("-inf")
    for ts in times:
        before = clock.observe(ts)
        assert before == (max(seen) - lateness if seen else float("-inf"))
        assert before >= previous
        previous = before
        seen.append(ts)


def test_wheel_fires_only_the_latest_deadline_once() -> None:
    wheel = TimerWheel()
    wheel.schedule("u1", "p0", 100.0)
    wheel.schedule("u1", "p0", 500.0)  # supersedes 100
    wheel.schedule("u2", "p0", 200.0)
    wheel.schedule("u3", "p0", 150.0)
    wheel.schedule("u3", "", None)  # cancelled
    wheel.observe("p0", 300.0)
    assert wheel.due() == [("u2", Tick(300.0, "p0"))]
    wheel.observe("p0", 250.0)  # a watermark never moves back
    wheel.observe("p0", 600.0)
    assert wheel.due() == [("u1", Tick(600.0, "p0"))]
    assert wheel.due() == [] and len(wheel) == 0


def test_wheel_waits_for_the_users_own_partition() -> None:
    wheel = TimerWheel()
    wheel.schedule("slow", "p1", 100.0)
    wheel.observe("p0", 1000.0)
    wheel.observe("p1", 50.0)
    assert wheel.due() == []
    wheel.observe("p1", 101.0)
    assert wheel.due() == [("slow", Tick(101.0, "p1"))]


def test_wheel_heap_stays_bounded_under_rescheduling() -> None:
    wheel = TimerWheel()
    for i in range(20_000):
        wheel.schedule(f"u{i % 10}", "p0", float(i))
    assert len(wheel) == 10
    assert len(wheel._heap) <= 2 * 10 + 1024 + 1
    wheel.observe("p0", 1e9)
    assert sorted(key for key, _ in wheel.due()) == [f"u{i}" for i in range(10)]
