"""Partition watermarks and the per-worker timer wheel."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.operators.event_time import BUCKET_S, PartitionWatermark, Tick, TimerWheel


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


class Owner:
    """A timer owner as the wheel sees one (the user step in the flow)."""

    def __init__(self, name: str) -> None:
        self.name, self.deadline, self.clock = name, None, ""

    def __repr__(self) -> str:
        return self.name


def names(due: list) -> list[tuple[str, Tick]]:
    return sorted((owner.name, tick) for owner, tick in due)


def test_wheel_fires_only_the_latest_deadline_once() -> None:
    wheel: TimerWheel[Owner] = TimerWheel()
    u1, u2, u3 = Owner("u1"), Owner("u2"), Owner("u3")
    wheel.schedule(u1, "p0", 100.0)
    wheel.schedule(u1, "p0", 500.0)  # supersedes 100
    wheel.schedule(u2, "p0", 200.0)
    wheel.schedule(u3, "p0", 150.0)
    wheel.schedule(u3, "", None)  # cancelled
    wheel.observe("p0", 300.0)
    assert names(wheel.due()) == [("u2", Tick(300.0, "p0"))]
    wheel.observe("p0", 250.0)  # a watermark never moves back
    wheel.observe("p0", 600.0)
    assert names(wheel.due()) == [("u1", Tick(600.0, "p0"))]
    assert wheel.due() == [] and len(wheel) == 0


def test_wheel_fires_inside_a_bucket_exactly_at_each_deadline() -> None:
    wheel: TimerWheel[Owner] = TimerWheel()
    owners = [Owner(f"u{i}") for i in range(5)]
    for i, owner in enumerate(owners):  # all in one bucket
        wheel.schedule(owner, "p0", BUCKET_S * 10 + i * 10.0)
    fired = []
    for i in range(5):
        wheel.observe("p0", BUCKET_S * 10 + i * 10.0 + 1)
        fired.append(names(wheel.due()))
    assert fired == [[(f"u{i}", Tick(BUCKET_S * 10 + i * 10.0 + 1, "p0"))] for i in range(5)]


def test_wheel_waits_for_the_users_own_partition() -> None:
    wheel: TimerWheel[Owner] = TimerWheel()
    slow = Owner("slow")
    wheel.schedule(slow, "p1", 100.0)
    wheel.observe("p0", 1000.0)
    wheel.observe("p1", 50.0)
    assert wheel.due() == []
    wheel.observe("p1", 101.0)
    assert names(wheel.due()) == [("slow", Tick(101.0, "p1"))]


def test_wheel_stays_bounded_under_rescheduling() -> None:
    wheel: TimerWheel[Owner] = TimerWheel()
    owners = [Owner(f"u{i}") for i in range(10)]
    for i in range(20_000):
        wheel.schedule(owners[i % 10], "p0", float(i) * 60)
    assert len(wheel) == 10
    assert wheel._entries <= 2 * 10 + 1024 + 1
    assert sum(len(owners) for _, owners in wheel._buckets.values()) == wheel._entries
    wheel.observe("p0", 1e9)
    assert [owner.name for owner, _ in sorted(wheel.due(), key=lambda d: d[0].name)] == [
        f"u{i}" for i in range(10)]


# A coarse grid of times: several deadlines share a bucket, and a watermark
# often equals a deadline (which must not fire it: due means strictly below).
times = st.integers(0, 4 * 6).map(lambda k: k * BUCKET_S / 6)
operations = st.lists(st.one_of(
    st.tuples(st.just("schedule"), st.integers(0, 5), st.sampled_from(["p0", "p1"]),
              st.none() | times),
    st.tuples(st.just("observe"), st.sampled_from(["p0", "p1"]), times),
    st.tuples(st.just("due")),
), max_size=80)


@settings(max_examples=300)
@given(operations)
def test_wheel_equals_a_plain_dict_of_deadlines(ops: list) -> None:
    """Whatever the order of scheduling, watermarks and polls, the wheel fires
    exactly what a dict of each owner's latest deadline says is due, once."""
    wheel: TimerWheel[Owner] = TimerWheel()
    owners = [Owner(f"u{i}") for i in range(6)]
    expected: dict[str, tuple[float, str]] = {}
    watermarks: dict[str, float] = {}
    for op in ops:
        if op[0] == "schedule":
            _, i, clock, deadline = op
            wheel.schedule(owners[i], clock, deadline)
            if deadline is None:
                expected.pop(owners[i].name, None)
            else:
                expected[owners[i].name] = (deadline, clock)
        elif op[0] == "observe":
            _, clock, watermark = op
            wheel.observe(clock, watermark)
            watermarks[clock] = max(watermark, watermarks.get(clock, float("-inf")))
        else:
            due = sorted((name, Tick(watermarks[clock], clock))
                         for name, (deadline, clock) in expected.items()
                         if deadline < watermarks.get(clock, float("-inf")))
            assert names(wheel.due()) == due
            for name, _ in due:
                del expected[name]
        assert len(wheel) == len(expected)
        assert {o.name: (o.deadline, o.clock) for o in owners if o.deadline is not None} == expected
