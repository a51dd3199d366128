"""The per-user step: profile features, journey changes, versions and snapshots."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.operators.events import Event
from segstream.operators.user import UserConfig, UserLogic, profile_fields
from segstream.state.profile import UserState

T0 = 1714557600.0  # 2024-05-01T10:00:00Z
ROLES = [None, "page_view", "product_view", "search", "add_to_cart", "checkout", "purchase"]


def event(role: str | None, ts: float, revenue: float = 0.0, mid: str = "m", key: str = "u1") -> Event:
    return Event(key, key, None, mid, "track", role or "Other", role, ts, revenue, {}, {}, {})


def run(events: list[Event], config: UserConfig | None = None) -> tuple[UserLogic, list]:
    logic = UserLogic.build(config or UserConfig(), None)
    changes = []
    for e in events:
        changes.extend(logic.on_event(e))
    return logic, changes


class TestScriptedJourney:
    def test_full_funnel(self) -> None:
        """A browse-checkout-buy-buy user walks awareness -> retention with versions 1..4."""
        _, changes = run([
            event("page_view", T0, mid="e1"),
            event("product_view", T0 + 10, mid="e2"),
            event("checkout", T0 + 20, mid="e3"),
            event("purchase", T0 + 30, 20.0, mid="e4"),
            event("purchase", T0 + 40, 30.0, mid="e5"),
        ])
        assert [(c.segment, c.previous, c.version, c.cause, c.rule) for c in changes] == [
            ("journey:awareness", None, 1, "e1", "start"),
            ("journey:consideration", "journey:awareness", 2, "e2", "awareness->consideration"),
            ("journey:decision", "journey:consideration", 3, "e3", "awareness|consideration->decision"),
            ("journey:retention", "journey:decision", 4, "e5", "decision->retention"),
        ]
        assert all(c.kind == "journey" and c.change == "enter" for c in changes)
        assert [c.event_time for c in changes] == [T0, T0 + 10, T0 + 20, T0 + 40]

    def test_profile_fields(self) -> None:
        """The Redis profile carries the headline features by their DESIGN names."""
        logic, _ = run([event("purchase", T0, 12.5), event("page_view", T0 + 3600, mid="x")])
        fields = profile_fields(logic.state)
        assert {k: fields[k] for k in ("events_total", "sessions_total", "purchases_total",
                                       "revenue_total", "first_seen", "last_seen", "journey")} == {
            "events_total": "2", "sessions_total": "2", "purchases_total": "1",
            "revenue_total": "12.5", "first_seen": "2024-05-01T10:00:00.000Z",
            "last_seen": "2024-05-01T11:00:00.000Z", "journey": "decision",
        }

    def test_session_gap_is_configurable(self) -> None:
        """Sessions split on gaps longer than session_gap_s."""
        events = [event(None, T0), event(None, T0 + 600), event(None, T0 + 1300)]
        assert run(events, UserConfig(session_gap_s=500))[0].state.sessions_total == 3
        assert run(events, UserConfig(session_gap_s=1800))[0].state.sessions_total == 1

    def test_empty_batch_is_no_update(self) -> None:
        """A batch without events yields nothing."""
        assert UserLogic.build(UserConfig(), None).on_batch([]) is None


events_strategy = st.lists(
    st.tuples(st.sampled_from(ROLES), st.floats(0, 30 * 86400), st.floats(0, 500)),
    min_size=1, max_size=60,
)


def to_events(raw: list[tuple[str | None, float, float]]) -> list[Event]:
    return [event(role, T0 + dt, rev if role == "purchase" else 0.0, mid=f"m{i}")
            for i, (role, dt, rev) in enumerate(raw)]


@settings(max_examples=200, deadline=None)
@given(events_strategy)
def test_versions_strictly_increase_and_chain(raw: list) -> None:
    """Versions are 1, 2, 3, ... and each change's previous is the segment before it."""
    logic, changes = run(to_events(raw))
    assert [c.version for c in changes] == list(range(1, len(changes) + 1))
    assert logic.state.version == len(changes)
    previous = None
    for change in changes:
        assert change.previous == previous
        previous = change.segment
    assert previous == f"journey:{logic.state.journey}"


@settings(max_examples=200, deadline=None)
@given(events_strategy)
def test_features_equal_batch_recompute_on_sorted_input(raw: list) -> None:
    """Incremental features equal a plain recomputation over the sorted events."""
    events = sorted(to_events(raw), key=lambda e: e.timestamp)
    state = run(events)[0].state
    times = [e.timestamp for e in events]
    purchases = [e for e in events if e.role == "purchase"]
    sessions = 1 + sum(1 for a, b in zip(times, times[1:]) if b - a > 1800)
    assert state.events_total == len(events)
    assert state.purchases_total == len(purchases)
    assert abs(state.revenue_total - sum(e.revenue for e in purchases)) < 1e-6
    assert (state.first_seen, state.last_seen) == (min(times), max(times))
    assert state.sessions_total == sessions


@settings(max_examples=100, deadline=None)
@given(events_strategy, st.integers(0, 60))
def test_snapshot_then_restore_is_equivalent(raw: list, cut: int) -> None:
    """Snapshotting mid-stream and resuming gives the same changes and state as one run."""
    events = to_events(raw)
    whole, whole_changes = run(events)
    first = UserLogic.build(UserConfig(), None)
    changes = [c for e in events[:cut] for c in first.on_event(e)]
    snap = first.snapshot()
    resumed = UserLogic.build(UserConfig(), snap)
    changes += [c for e in events[cut:] for c in resumed.on_event(e)]
    if cut == 0:
        assert snap is None
    assert changes == whole_changes
    assert resumed.state == whole.state


@given(events_strategy)
def test_input_events_are_not_mutated_or_kept(raw: list) -> None:
    """The step neither mutates events nor keeps references to their dicts."""
    events = to_events(raw)
    before = copy.deepcopy(events)
    logic, _ = run(events)
    assert events == before
    assert all(not isinstance(getattr(logic.state, f), dict) for f in UserState.__slots__)


def test_state_size_is_bounded() -> None:
    """State does not grow with the number of events."""
    logic, _ = run([event("product_view", T0 + i) for i in range(10)])
    small = len(logic.snapshot())
    for i in range(10_000):
        logic.on_event(event("purchase", T0 + 100 + i, 1.0))
    assert len(logic.snapshot()) <= small + 40
