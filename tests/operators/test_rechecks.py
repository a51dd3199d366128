"""Predicted re-checks: a condition never changes with time before its predicted time."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from segstream.operators.event_time import Stamped
from segstream.operators.events import Event, iso_utc
from segstream.operators.expressions import NUMBER, parse
from segstream.operators.features import FeatureConfig, stamp_event, time_behaviour
from segstream.operators.parse import EventParser
from segstream.operators.rechecks import DECAY, EPSILON, LINEAR, Clock, next_change
from segstream.operators.segments import load_segments_text
from segstream.operators.user import UserConfig, UserLogic
from segstream.operators.windows import WindowLayout
from segstream.state.profile import UserState

HALF_LIFE = 7 * 86400.0
OPS = ("<", "<=", ">", ">=")
COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}
SCHEMA = {"x": NUMBER}


def value_at(move: str, value: float, elapsed: float) -> float:
    return value + elapsed if move == LINEAR else value * 2.0 ** (-elapsed / HALF_LIFE)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from((LINEAR, DECAY)), st.sampled_from(OPS), st.booleans(),
       st.integers(0, 10**6).map(float), st.integers(0, 10**6).map(float),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_a_comparison_does_not_change_before_its_predicted_time_and_has_changed_at_it(
    move: str, op: str, name_left: bool, value: float, constant: float, fractions: list[float],
) -> None:
    """Against a constant, a linear or decaying name keeps its result until the prediction, and
    (when there is one and the value really crosses) the result has flipped by then."""
    text = f"x {op} {constant}" if name_left else f"{constant} {op} x"
    expression = parse(text, SCHEMA)
    at = 1.7e9
    clock = Clock(at, lambda _windows: None, HALF_LIFE, 3600.0)
    due = next_change(expression, {"x": value}, {"x": move}, clock)
    now = expression.evaluate({"x": value})
    horizon = (due - EPSILON if due is not None else at + 10**8) - at
    for fraction in fractions:  # never a change before the prediction
        later = value_at(move, value, fraction * horizon * 0.999)
        assert expression.evaluate({"x": later}) == now, (text, value, fraction)
    if due is not None and not math.isclose(value, constant):
        flipped = expression.evaluate({"x": value_at(move, value, due - at)})
        assert flipped != now, (text, value, due - at)


def test_step_names_wait_for_the_windows_and_mixes_fall_back_to_the_period() -> None:
    moves = time_behaviour(WindowLayout.build(("1h", "7d")))
    schema = {name: NUMBER for name in moves}
    clock = Clock(100.0, lambda windows: 900.0 if windows == {"7d"} else None, HALF_LIFE, 3600.0)
    assert next_change(parse("sessions_7d > 3", schema), {"sessions_7d": 5}, moves, clock) == 900.0
    assert next_change(parse("search_1h > 3", schema), {"search_1h": 5}, moves, clock) is None
    mix = parse("age_s > engagement", schema)
    assert next_change(mix, {"age_s": 1.0, "engagement": 2.0}, moves, clock) == 100.0 + 3600
    # A name that does not move: never re-checked by time.
    assert next_change(parse("x > 1", SCHEMA), {"x": 2.0}, moves, clock) is None


events_in_time = st.lists(st.tuples(st.integers(0, 40 * 86400), st.sampled_from(
    ("product_view", "purchase", "session"))), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(events_in_time, st.integers(0, 60 * 86400), st.lists(st.floats(0.0, 1.0), max_size=10))
def test_window_sums_stay_put_until_the_next_change_and_move_at_it(
    events: list[tuple[int, str]], at_offset: int, fractions: list[float],
) -> None:
    layout = WindowLayout.build(("1h", "24h", "7d", "30d"))
    levels = layout.empty()
    for ts, role in sorted(events):
        layout.add(levels, float(ts), role, 10.0)
    at = float(max(ts for ts, _ in events) + at_offset)
    due = layout.next_change(levels, at)
    now = layout.sums(levels, at)
    end = due if due is not None else at + 400 * 86400
    for fraction in fractions:
        assert layout.sums(levels, at + fraction * (end - at) * 0.999999) == now
    if due is None:
        assert layout.sums(levels, end) == now
    else:
        assert due > at
        assert layout.sums(levels, due) != now


def purchase(ts: float, mid: str) -> Stamped:
    doc = (f'{{"type":"track","event":"Order Completed","userId":"u1","messageId":"{mid}",'
           f'"timestamp":"{iso_utc(ts)}","properties":{{"revenue":10}}}}')
    parsed = EventParser().parse(doc.encode())
    assert isinstance(parsed, Event)
    return stamp_event(parsed, ts - 1, "clicks:0")


def test_a_member_is_rechecked_once_not_every_hour() -> None:
    """``recent_purchaser`` for 14 days: one re-check, at the end, instead of 336 hourly ones."""
    config = load_segments_text('''
[journey]
states = ["a"]
initial = "a"
[rules.recent_purchaser]
when = "since_last_purchase_s <= 14d"
[rules.loyal]
when = "purchases_30d >= 2"
''', "test.toml")
    logic = UserLogic(UserConfig(features=FeatureConfig(journey=config.journey), rules=config.rules))
    t0 = 1714557600.0  # day 19844, 10:00
    exits = []
    logic.on_items([purchase(t0, "p1"), purchase(t0 + 3600, "p2")])
    planned = [UserState.from_bytes(logic.snapshot()).recheck_at]
    for hour in range(1, 40 * 24):
        for update in logic.on_watermark(t0 + hour * 3600):
            exits += [(c.segment, c.event_time) for c in update.changes if c.change == "exit"]
        due = UserState.from_bytes(logic.snapshot()).recheck_at
        if due != planned[-1]:
            planned.append(due)
    recent_ends = t0 + 3600 + 14 * 86400 + EPSILON  # 14 days after p2
    loyal_ends = (19844 + 30) * 86400.0  # when their day leaves the 30-day window
    assert planned == [recent_ends, loyal_ends, None]  # no member left: nothing to re-check
    assert exits == [("recent_purchaser", recent_ends), ("loyal", loyal_ends)]
