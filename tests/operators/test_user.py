"""The per-user step: event time, lateness, timers, eviction, versions and snapshots."""

from __future__ import annotations

import copy
import dataclasses
import random
import tracemalloc
from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from segstream.operators.event_time import PartitionWatermark, Stamped, Tick
from segstream.operators.events import Change, Event, iso_utc
from segstream.operators.features import FeatureConfig, apply_fact, features, stamp_event
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic, UserUpdate
from segstream.operators.windows import WINDOW_ROLES
from segstream.config import load_segments
from segstream.state.profile import Profile, UserState

from tests.oracle.batch_features import ORACLE_SEGMENTS, recompute

T0 = 1714557600.0  # 2024-05-01T10:00:00Z
ROLES = [None, "page_view", "product_view", "search", "add_to_cart", "checkout", "purchase"]
CLOCK = "clicks:0"
LATENESS = 60.0
DAY = 86400.0


def event(role: str | None, ts: float, revenue: float = 0.0, mid: str = "m", key: str = "u1",
          context: dict | None = None, traits: dict | None = None) -> Event:
    return Event(key, key, None, mid, "track", role or "Other", role, ts, revenue, {},
                 context or {}, traits or {})


def stamp(events: Sequence[Event], lateness: float = LATENESS) -> list[Stamped]:
    """What the parse step does: stamp each event with its partition's watermark before it."""
    clock = PartitionWatermark(lateness)
    return [stamp_event(e, clock.observe(e.timestamp), CLOCK) for e in events]


def run(items: Sequence[Stamped | Tick], config: UserConfig | None = None,
        batch: int = 1) -> tuple[UserLogic, list[UserUpdate]]:
    logic = UserLogic(config or UserConfig(), None)
    updates: list[UserUpdate] = []
    for start in range(0, len(items), batch):
        updates += logic.on_items(items[start:start + batch])
    return logic, updates


def changes_of(updates: Sequence[UserUpdate]) -> list[Change]:
    return [c for u in updates for c in u.changes]


def state_of(logic: UserLogic) -> UserState:
    assert logic.data is not None
    return UserState.from_bytes(logic.data)


def view_of(logic: UserLogic, config: UserConfig | None = None) -> Profile:
    """Settled profile plus pending events: what the user step publishes."""
    state = state_of(logic)
    view = state.settled.copy()
    for fact in state.pending:
        apply_fact(view, fact, (config or UserConfig()).features)
    return view


def final_features(logic: UserLogic, config: UserConfig | None = None) -> dict:
    state = state_of(logic)
    values = features(view_of(logic, config), (config or UserConfig()).features)
    values["journey"] = state.published_journey
    values["segments"] = sorted(state.published_segments)
    return values


def oracle_config(**overrides: Any) -> UserConfig:
    """The user step under tests/oracle/segments.toml, which the batch oracle recomputes."""
    segments = load_segments(ORACLE_SEGMENTS)
    return UserConfig(features=FeatureConfig(journey=segments.journey, cart=segments.cart_abandoner),
                      rules=segments.rules, **overrides)


class TestScriptedJourney:
    def test_full_funnel(self) -> None:
        """A browse-checkout-buy-buy user walks awareness -> retention, versions in fixed blocks."""
        _, updates = run(stamp([
            event("page_view", T0, mid="e1"),
            event("product_view", T0 + 10, mid="e2"),
            event("checkout", T0 + 20, mid="e3"),
            event("purchase", T0 + 30, 20.0, mid="e4"),
            event("purchase", T0 + 40, 30.0, mid="e5"),
        ]))
        changes = changes_of(updates)
        journey = [c for c in changes if c.kind == "journey"]
        assert [(c.segment, c.previous, c.cause, c.rule) for c in journey] == [
            ("journey:awareness", None, "e1", "start"),
            ("journey:consideration", "journey:awareness", "e2", "awareness->consideration"),
            ("journey:decision", "journey:consideration", "e3", "awareness|consideration|win_back->decision"),
            ("journey:retention", "journey:decision", "e5", "decision|win_back->retention"),
        ]
        assert [c.event_time for c in journey] == [T0, T0 + 10, T0 + 20, T0 + 40]
        # A new user with no email nor country needs enrichment from the first
        # event; the first purchase makes them a recent purchaser.
        assert [(c.segment, c.change, c.cause) for c in changes if c.kind == "rule"] == [
            ("new_user", "enter", "e1"), ("needs_enrichment", "enter", "e1"),
            ("recent_purchaser", "enter", "e4"),
        ]
        # Each event takes a block of versions: two journey slots, then one per
        # rule in file order (7 default rules), used or not.
        base = int(T0 * 1_000_000)
        block = 2 + 7
        slot = {"new_user": 2 + 6, "needs_enrichment": 2 + 7, "recent_purchaser": 2 + 5}
        expected = [base + block * int(c.cause[1:]) - block + (2 if c.kind == "journey" else slot[c.segment])
                    for c in changes]
        assert [c.version for c in changes] == expected

    def test_profile_fields(self) -> None:
        """The Redis profile carries the DESIGN headline names and the windowed features."""
        _, updates = run(stamp([event("purchase", T0, 12.5),
                                event("page_view", T0 + 3600, mid="x")]), batch=2)
        fields = updates[-1].profile
        assert {k: fields[k] for k in ("events_total", "sessions_total", "purchases_total",
                                       "revenue_total", "first_seen", "last_seen", "journey",
                                       "purchase_24h", "purchase_1h", "revenue_30d",
                                       "since_last_purchase_s", "last_purchase")} == {
            "events_total": "2", "sessions_total": "2", "purchases_total": "1",
            "revenue_total": "12.5", "first_seen": "2024-05-01T10:00:00.000Z",
            "last_seen": "2024-05-01T11:00:00.000Z", "journey": "decision",
            "purchase_24h": "1", "purchase_1h": "0", "revenue_30d": "12.5",
            "since_last_purchase_s": "3600.0", "last_purchase": "2024-05-01T10:00:00.000Z",
        }

    def test_session_gap_is_configurable(self) -> None:
        """Sessions split on gaps longer than session_gap_s."""
        events = [event(None, T0, mid="a"), event(None, T0 + 600, mid="b"),
                  event(None, T0 + 1300, mid="c")]
        short = UserConfig(features=FeatureConfig(session_gap_s=500))
        assert final_features(run(stamp(events), short)[0], short)["sessions_total"] == 3
        assert final_features(run(stamp(events))[0])["sessions_total"] == 1

    def test_empty_batch_is_no_update(self) -> None:
        """A batch without events yields nothing."""
        assert UserLogic(UserConfig(), None).on_items([]) == []


# --- event time: any arrival order within the lateness gives the sorted result ----------

user_events = st.lists(
    st.tuples(st.sampled_from(ROLES), st.floats(0, 3 * DAY), st.floats(0, 500),
              st.sampled_from([None, "mobile", "desktop"])),
    min_size=1, max_size=40,
)


def to_events(raw: list[tuple]) -> list[Event]:
    return [
        event(role, T0 + dt, rev if role == "purchase" else 0.0, mid=f"m{i:03d}",
              context={"device": {"type": device}} if device else None,
              traits={"email": "x@y.z"} if i % 7 == 3 else None)
        for i, (role, dt, rev, device) in enumerate(raw)
    ]


def timeline(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.timestamp, e.message_id))


def shuffle_within(events: list[Event], lateness: float, seed: int) -> list[Event]:
    """An arrival order where no event comes more than ``lateness`` after a later one."""
    rng = random.Random(seed)
    keyed = [(e.timestamp + rng.uniform(0, lateness), i, e) for i, e in enumerate(events)]
    return [e for _, _, e in sorted(keyed)]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], float) and isinstance(b[name], float):
            assert abs(a[name] - b[name]) <= 1e-9 * max(1.0, abs(a[name])), name
        else:
            assert a[name] == b[name], name


@settings(max_examples=200, deadline=None)
@given(user_events, st.integers(0, 2**32), st.integers(1, 5))
def test_any_order_within_lateness_gives_the_sorted_result(raw: list, seed: int, batch: int) -> None:
    """A permutation within the allowed lateness, in any batching, ends in the sorted state."""
    events = to_events(raw)
    arrival = shuffle_within(events, LATENESS, seed)
    stamped = stamp(arrival)
    assert all(s.fact.ts >= s.watermark for s in stamped)  # all on time
    shuffled, _ = run(stamped, batch=batch)
    ordered, _ = run(stamp(timeline(events)))
    assert_same(final_features(shuffled), final_features(ordered))


@settings(max_examples=200, deadline=None)
@given(user_events, st.integers(0, 2**32))
def test_window_counts_are_never_negative_nor_above_the_events(raw: list, seed: int) -> None:
    """Every rolling count is within [0, events of that role], at any point of the stream."""
    events = to_events(raw)
    logic = UserLogic(UserConfig(), None)
    for item in stamp(shuffle_within(events, LATENESS, seed)):
        logic.on_items([item])
        values = final_features(logic)
        counts = {name: value for name, value in values.items()
                  if name.startswith((*WINDOW_ROLES, "purchases_"))}
        assert len(counts) == 4 * len(WINDOW_ROLES) + 3  # + purchases_total/_30d/_90d
        for name, value in counts.items():
            role = name.rsplit("_", 1)[0].removesuffix("s")
            assert 0 <= value <= sum(1 for e in events if e.role == role), name


@settings(max_examples=150, deadline=None)
@given(user_events, st.integers(0, 2**32), st.data())
def test_ticks_never_change_what_is_published(raw: list, seed: int, data: st.DataObject) -> None:
    """Ticks carrying watermarks the input already reached give the same changes and versions."""
    config = UserConfig(state_ttl_s=DAY)  # so that evictions happen too
    stamped = stamp(shuffle_within(to_events(raw), LATENESS, seed))
    with_ticks: list[Stamped | Tick] = []
    reached = float("-inf")
    for item in stamped:
        # A worker's tick carries a watermark of events it already processed.
        if data.draw(st.booleans()) and reached > float("-inf"):
            with_ticks.append(Tick(data.draw(st.floats(reached - DAY, reached)), CLOCK))
        with_ticks.append(item)
        reached = max(reached, item.watermark, item.fact.ts - LATENESS)
    _, plain = run(stamped, config)
    _, ticked = run(with_ticks, config)
    assert changes_of(ticked) == changes_of(plain)


@settings(max_examples=200, deadline=None)
@given(user_events, st.integers(0, 2**32), st.integers(0, 40))
def test_snapshot_then_restore_is_equivalent(raw: list, seed: int, cut: int) -> None:
    """Snapshotting mid-stream and resuming gives the same changes and state as one run."""
    config = UserConfig(state_ttl_s=DAY)
    items = stamp(shuffle_within(to_events(raw), LATENESS, seed))
    whole, whole_updates = run(items, config)
    first, updates = run(items[:cut], config)
    resumed = UserLogic(config, first.snapshot())
    for item in items[cut:]:
        updates += resumed.on_items([item])
    assert changes_of(updates) == changes_of(whole_updates)
    assert resumed.data == whole.data


@settings(max_examples=200, deadline=None)
@given(user_events, st.integers(0, 2**32))
def test_versions_strictly_increase_and_journey_chains(raw: list, seed: int) -> None:
    """Versions strictly increase; each journey change's previous is the phase before it."""
    config = UserConfig(state_ttl_s=DAY)
    _, updates = run(stamp(shuffle_within(to_events(raw), LATENESS, seed)), config)
    versions = [c.version for c in changes_of(updates)]
    assert versions == sorted(set(versions))
    phase = None
    for change in changes_of(updates):
        if change.kind != "journey":
            continue
        if change.change == "exit":
            assert change.segment == phase
            phase = None
        else:
            assert change.previous == phase
            phase = change.segment


# --- eviction --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(user_events, user_events)
def test_eviction_then_return_starts_clean(first_life: list, second_life: list) -> None:
    """An evicted user leaves every segment; when they return, they start from nothing."""
    config = oracle_config(state_ttl_s=10 * DAY)  # no rule re-checks between
    before = timeline(to_events(first_life))
    last = before[-1].timestamp
    later = [dataclasses.replace(e, message_id="b" + e.message_id, timestamp=e.timestamp + 30 * DAY)
             for e in to_events(second_life)]
    logic, updates = run(stamp(before), config)
    # The session ends first (a feature snapshot: the user enters a cluster).
    updates += logic.on_items([Tick(last + config.features.session_gap_s + 1, CLOCK)])
    published = state_of(logic)
    assert published.settled.cluster == "unassigned"
    evicted = logic.on_items([Tick(last + 10 * DAY + 1, CLOCK)])
    assert logic.data is None
    [update] = evicted
    assert update.evicted and update.profile == {}
    exits = {c.segment for c in update.changes}
    assert all(c.change == "exit" and c.cause == "timer:evict" for c in update.changes)
    assert exits == {f"journey:{published.published_journey}", *published.published_segments,
                     "cluster:unassigned"}

    after = logic.on_items(stamp(timeline(later)))
    fresh, fresh_updates = run(stamp(timeline(later)), config)
    assert_same(final_features(logic), final_features(fresh))
    old_versions = [c.version for c in changes_of(updates + evicted)]
    assert min(c.version for c in changes_of(after)) > max(old_versions)
    assert [(c.segment, c.change) for c in changes_of(after)] == [
        (c.segment, c.change) for c in changes_of(fresh_updates)
    ]


def test_return_after_the_deadline_evicts_first_then_starts_anew() -> None:
    """An event whose watermark passed the eviction deadline evicts, then starts a new life."""
    config = UserConfig(state_ttl_s=DAY)
    logic, updates = run(stamp([event("product_view", T0, mid="a")]), config)
    comeback = stamp_event(event("page_view", T0 + 3 * DAY, mid="b"), T0 + 2 * DAY, CLOCK)
    out = logic.on_items([comeback])
    assert [u.evicted for u in out] == [True, False]
    versions = [c.version for c in changes_of(updates + out)]
    assert versions == sorted(set(versions))
    assert final_features(logic, config)["events_total"] == 1
    assert final_features(logic, config)["journey"] == "awareness"


def test_eviction_and_return_in_one_batch_continue_versions() -> None:
    """Events after the eviction deadline in the same batch start the next life at once."""
    config = UserConfig(state_ttl_s=DAY)
    logic, updates = run(stamp([event("product_view", T0, mid="a")]), config)
    comeback = stamp_event(event("product_view", T0 + 3 * DAY, mid="b"), T0 - LATENESS, CLOCK)
    out = logic.on_items([comeback, Tick(T0 + 3 * DAY, CLOCK)])
    assert [u.evicted for u in out] == [True, False]
    versions = [c.version for c in changes_of(updates + out)]
    assert versions == sorted(set(versions))
    assert features(view_of(logic), config.features)["events_total"] == 1


# --- lateness --------------------------------------------------------------------------


def evicted_at(logic: UserLogic, watermark: float) -> bool:
    """Advance the user to ``watermark``; return whether that evicted them."""
    return any(update.evicted for update in logic.on_items([Tick(watermark, CLOCK)]))


def test_an_event_from_1970_never_shortens_a_live_users_life() -> None:
    """A device clock reset to 1970 (floor lowered for a backfill) leaves the eviction deadline alone."""
    config = UserConfig(state_ttl_s=90 * DAY)
    logic, _ = run(stamp([event("page_view", T0, mid="a"), event("page_view", T0 + 100, mid="b")]),
                   config)
    reset = stamp_event(event("purchase", 0.0, 5.0, mid="1970"), T0 + 200, CLOCK)
    [update] = logic.on_items([reset])
    assert not update.evicted
    values = final_features(logic, config)
    assert (values["events_total"], values["late_total"], values["first_seen"]) == (3, 1, 0.0)
    assert values["last_seen"] == T0 + 100
    assert not evicted_at(logic, T0 + 100 + 90 * DAY - 1)
    assert evicted_at(logic, T0 + 100 + 90 * DAY + 1)


def test_an_old_late_event_does_not_evict_a_user_whose_events_are_pending() -> None:
    """Scenario: a user's only on-time events still wait for the watermark when an event months
    old arrives. We expect no eviction: all three events end in the one profile."""
    config = UserConfig(state_ttl_s=90 * DAY)
    watermark = T0 - LATENESS
    first = [stamp_event(event("page_view", T0 + i, mid=f"m{i}"), watermark, CLOCK) for i in range(2)]
    old = stamp_event(event("purchase", T0 - 200 * DAY, 9.0, mid="old"), watermark, CLOCK)
    logic, updates = run([*first, old, Tick(T0 + 10, CLOCK)], config)
    assert not any(u.evicted for u in updates)
    values = final_features(logic, config)
    assert (values["events_total"], values["late_total"], values["purchases_total"]) == (3, 1, 1)
    assert not evicted_at(logic, T0 + 1 + 90 * DAY - 1)
    assert evicted_at(logic, T0 + 1 + 90 * DAY + 1)


def test_a_late_event_newer_than_the_last_on_time_one_extends_life() -> None:
    """Eviction counts idleness from the newest event, late ones included."""
    config = UserConfig(state_ttl_s=10 * DAY)
    logic, _ = run(stamp([event("page_view", T0, mid="a")]), config)
    assert not evicted_at(logic, T0 + 5 * DAY)  # other users moved the partition on
    late = stamp_event(event("page_view", T0 + 2 * DAY, mid="late"), T0 + 5 * DAY, CLOCK)
    logic.on_items([late])
    assert not evicted_at(logic, T0 + 12 * DAY - 1)
    assert evicted_at(logic, T0 + 12 * DAY + 1)


def test_late_event_counts_only_in_aggregates() -> None:
    """A late event (apply policy) adds to totals and day windows, not sessions or hours."""
    items = stamp([event("page_view", T0, mid="a"), event("page_view", T0 + 7200, mid="b")])
    late = stamp_event(event("purchase", T0 + 3600, 40.0, mid="late"), T0 + 7200 - LATENESS, CLOCK)
    logic, _ = run([*items, late])
    values = final_features(logic)
    assert (values["events_total"], values["late_total"], values["purchases_total"]) == (3, 1, 1)
    assert (values["revenue_total"], values["revenue_30d"], values["purchase_7d"]) == (40.0, 40.0, 1)
    assert (values["purchase_24h"], values["sessions_total"], values["last_purchase"]) == (0, 2, None)
    assert values["last_seen"] == T0 + 7200


# --- the cart-abandonment trigger ---------------------------------------------------------


def browse_and_add(start: float, views: int = 5) -> list[Event]:
    out = [event("product_view", start + 60 * i, mid=f"v{start}-{i}") for i in range(views)]
    return [*out, event("add_to_cart", start + 60 * views, mid=f"add{start}")]


def cart_changes(updates: Sequence[UserUpdate]) -> list[tuple[str, str, float]]:
    return [(c.change, c.cause, c.event_time) for c in changes_of(updates)
            if c.segment == "cart_abandoner"]


def test_cart_abandoner_fires_once_in_event_time() -> None:
    """Five views in 10 minutes, a cart add, no purchase for 24 h: one enter, at the deadline."""
    events = browse_and_add(T0)
    logic, updates = run(stamp(events), oracle_config())
    assert cart_changes(updates) == []
    deadline = T0 + 300 + DAY
    assert logic.timer == (T0 + 300, CLOCK)  # first wake-up: settle the burst
    assert logic.on_items([Tick(T0 + 301, CLOCK)]) == []
    session_end = T0 + 300 + UserConfig().features.session_gap_s
    assert logic.timer == (session_end, CLOCK)  # then the end of the session (a snapshot)
    updates += logic.on_items([Tick(session_end + 1, CLOCK)])
    assert logic.timer == (deadline, CLOCK)
    assert logic.on_items([Tick(deadline, CLOCK)]) == []  # not past the deadline yet
    updates += logic.on_items([Tick(deadline + 1, CLOCK)])
    updates += logic.on_items([Tick(deadline + 2 * DAY, CLOCK)])
    assert cart_changes(updates) == [("enter", "timer:cart_abandoner", deadline)]
    # The next purchase leaves the segment.
    buy = stamp_event(event("purchase", deadline + 2 * DAY, 9.0, mid="buy"), deadline, CLOCK)
    assert cart_changes(logic.on_items([buy])) == [("exit", "buy", deadline + 2 * DAY)]


def test_a_timer_that_changes_no_membership_still_updates_the_profile() -> None:
    """A purchase just after the deadline (pending) keeps the user out, yet the count moves."""
    deadline = T0 + 300 + DAY
    items = stamp([*browse_and_add(T0), event("purchase", deadline + 10, 5.0, mid="buy")])
    logic, updates = run(items)
    fired = logic.on_items([Tick(deadline + 1, CLOCK)])
    assert cart_changes(updates + fired) == []
    assert [u.profile["cart_abandoned_total"] for u in fired] == ["1"]


def test_cart_abandoner_cancelled_by_a_purchase_before_the_deadline() -> None:
    """A purchase within 24 h of the add cancels the timer: no change, ever."""
    events = [*browse_and_add(T0), event("purchase", T0 + 300 + DAY - 1, 5.0, mid="buy")]
    logic, updates = run(stamp(events))
    updates += logic.on_items([Tick(T0 + 10 * DAY, CLOCK)])
    assert cart_changes(updates) == []


def test_cart_abandoner_needs_enough_views() -> None:
    """Four views are not enough to arm it; views spread over more than 10 minutes neither."""
    logic, updates = run(stamp(browse_and_add(T0, views=4)))
    updates += logic.on_items([Tick(T0 + 3 * DAY, CLOCK)])
    spread = [event("product_view", T0 + 200 * i, mid=f"s{i}") for i in range(5)]
    spread.append(event("add_to_cart", T0 + 1000, mid="add"))
    logic, more = run(stamp(spread))
    more += logic.on_items([Tick(T0 + 3 * DAY, CLOCK)])
    assert cart_changes(updates) == cart_changes(more) == []


def test_cart_abandoner_by_the_next_event_without_ticks() -> None:
    """Without ticks, the first event that brings the watermark past the deadline fires it.

    The event at +3 days carries the watermark from before it (still before the
    deadline); the one after it carries a watermark past the deadline, so the
    timer fires before that event is applied, with the deadline as its time.
    """
    events = [*browse_and_add(T0), event("page_view", T0 + 3 * DAY, mid="later"),
              event("page_view", T0 + 3 * DAY + 1, mid="next")]
    items = stamp(events)
    logic, updates = run(items[:-1])
    assert cart_changes(updates) == []
    deadline = T0 + 300 + DAY
    assert cart_changes(logic.on_items(items[-1:])) == [("enter", "timer:cart_abandoner", deadline)]


# --- the state stays small and never keeps the event's dicts -------------------------------


@given(user_events)
def test_input_events_are_not_mutated(raw: list) -> None:
    """The step does not mutate the events it is given."""
    events = to_events(raw)
    before = copy.deepcopy(events)
    run(stamp(timeline(events)))
    assert events == before


def test_a_tick_past_the_last_pending_event_settles_an_idle_user() -> None:
    """The wheel wakes a user once the watermark passes its final burst, and that burst settles."""
    config = oracle_config()  # no rule re-checks: the timers below are all there is
    logic, _ = run(stamp([event("product_view", T0 + i, mid=f"m{i}") for i in range(3)]), config)
    assert len(state_of(logic).pending) == 3
    assert logic.timer == (T0 + 2, CLOCK)
    before = len(logic.snapshot() or b"")
    assert logic.on_items([Tick(T0 + 2.5, CLOCK)]) == []  # nothing published: only settled
    assert state_of(logic).pending == []
    assert len(logic.snapshot() or b"") < before
    # Now the end of the session (a feature snapshot), then 14 days of inactivity
    # (the journey moves to churn_risk), then the churn label, then eviction.
    gap = config.features.session_gap_s
    assert logic.timer is not None and logic.timer[0] == T0 + 2 + gap
    logic.on_items([Tick(T0 + 3 + gap, CLOCK)])
    assert logic.timer is not None and logic.timer[0] == T0 + 2 + 14 * DAY
    [update] = logic.on_items([Tick(T0 + 3 + 14 * DAY, CLOCK)])
    assert [(c.segment, c.cause, c.rule) for c in update.changes] == [
        ("journey:churn_risk", "timer:journey", "*->churn_risk")]
    assert logic.timer is not None and logic.timer[0] == T0 + 2 + gap + 14 * DAY
    logic.on_items([Tick(T0 + 3 + gap + 14 * DAY, CLOCK)])
    assert logic.timer is not None and logic.timer[0] == T0 + 2 + 90 * DAY


def test_state_size_is_bounded() -> None:
    """State does not grow with the number of events (buckets expire, no event lists)."""
    logic, _ = run(stamp([event("product_view", T0 + i, mid=f"a{i}") for i in range(10)]))
    small = len(logic.snapshot() or b"")
    items = stamp([event("purchase", T0 + 100 + 600 * i, 1.0, mid=f"b{i:06d}")
                   for i in range(20_000)])
    for item in items:
        logic.on_items([item])
    assert len(logic.snapshot() or b"") <= small + 4000


# --- against the independent batch oracle ---------------------------------------------

NAMES = {"product_view": "Product Viewed", "search": "Products Searched", "add_to_cart": "Product Added",
         "checkout": "Checkout Started", "purchase": "Order Completed", "page_view": None, None: "Other"}

raw_calls = st.lists(
    st.tuples(st.sampled_from(list(NAMES)), st.integers(0, 4 * 86400 * 1000),
              st.sampled_from([0, 5, 49.99]), st.sampled_from([None, "mobile", "tv"]),
              st.sampled_from([None, {"email": "a@b.c"}, {"plan": "pro", "email": "x" * 250}])),
    min_size=1, max_size=50,
)


def to_docs(raw: list) -> list[dict]:
    docs = []
    for i, (role, ms, revenue, device, traits) in enumerate(raw):
        doc: dict = {"userId": "u1", "messageId": f"m{i % 7}-{i}",
                     "timestamp": iso_utc(T0 + ms / 1000), "properties": {"revenue": revenue}}
        if NAMES[role] is None:
            doc |= {"type": "page", "name": "Home"}
        else:
            doc |= {"type": "track", "event": NAMES[role]}
        if device:
            doc["context"] = {"device": {"type": device}, "location": {"country": "NL"}}
        if traits:
            doc["traits"] = traits
        docs.append(doc)
    return docs


@settings(max_examples=150, deadline=None)
@given(raw_calls, st.integers(0, 2**32))
def test_any_shuffle_within_lateness_equals_the_batch_oracle(raw: list, seed: int) -> None:
    """Every feature, journey and rule segment equals tests/oracle's batch recomputation."""
    docs = to_docs(raw)
    parser = EventParser()
    events = [parser.parse(orjson.dumps(doc)) for doc in docs]
    assert all(isinstance(e, Event) for e in events)
    stamped = stamp(shuffle_within(events, LATENESS, seed))  # type: ignore[arg-type]
    config = oracle_config()
    logic, _ = run(stamped, config, batch=3)
    final_watermark = max(e.timestamp for e in events) - LATENESS  # type: ignore[union-attr]
    logic.on_watermark(final_watermark)
    expected = recompute(docs, final_watermarks=final_watermark)["u1"]
    assert_same(final_features(logic, config), expected)


def test_updates_hold_their_profile_in_its_own_size() -> None:
    """An update waiting for its sink costs its JSON's length, not orjson's output buffer.

    An end-of-input settle holds every user's update at once.
    """
    config = UserConfig()
    tracemalloc.start()
    try:
        updates = [run(stamp([event("product_view", 1e6 + i, key=f"u{i}")]), config)[1][-1]
                   for i in range(100)]
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(updates[0].profile_json)
    assert size > 1000 and updates[0].profile["events_total"] == "1"
    assert held < 100 * (size + 3000)  # the update, its changes and learn items; not 16 KiB
