"""Rule segments and the segments file: hysteresis, minimum time, re-checks, errors with lines."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segstream.operators.event_time import Stamped
from segstream.operators.events import Event, iso_utc
from segstream.operators.features import FeatureConfig, stamp_event
from segstream.operators.parse import EventParser
from segstream.operators.population import Population
from segstream.operators.rechecks import EPSILON, Clock
from segstream.operators.segments import DEFAULT_SEGMENTS_FILE, load_segments_text
from segstream.operators.user import UserConfig, UserLogic, UserUpdate

from segstream.errors import ConfigError, ExpressionError

DAY = 86400.0
T0 = 1714557600.0

JOURNEY = """
[journey]
states = ["a", "b"]
initial = "a"
[[journey.transitions]]
from = "a"
to = "b"
on = "purchase"
"""


def segments(rules: str, extra: str = "") -> Any:
    return load_segments_text(JOURNEY + rules + extra, "test.toml")


HYSTERESIS = """
[rules.big]
when = "revenue_total > 100"
exit_when = "revenue_total < 80"
"""


def test_hysteresis_enters_high_and_leaves_low() -> None:
    rules = segments(HYSTERESIS).rules
    assert rules.decide({}, {"revenue_total": 101.0}, None, 0.0) == [(0, "big", True)]
    assert rules.decide({}, {"revenue_total": 90.0}, None, 0.0) == []
    assert rules.decide({"big": 0.0}, {"revenue_total": 90.0}, None, 1.0) == []  # in the band: stays
    assert rules.decide({"big": 0.0}, {"revenue_total": 79.0}, None, 1.0) == [(0, "big", False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=200), min_size=1, max_size=60))
def test_with_hysteresis_a_member_never_flaps_inside_the_band(values: list[float]) -> None:
    """Membership changes only when the value crosses the far threshold: enter > 100, leave < 80."""
    rules = segments(HYSTERESIS).rules
    members: dict[str, float] = {}
    for at, value in enumerate(values):
        for _slot, name, entered in rules.decide(members, {"revenue_total": value}, None, float(at)):
            if entered:
                assert value > 100
                members[name] = float(at)
            else:
                assert value < 80
                del members[name]
        assert ("big" in members) == (value > 100 or ("big" in members and value >= 80))


def test_min_time_holds_an_exit_back() -> None:
    rules = segments('[rules.vip]\nwhen = "revenue_total > 100"\nmin_time = "1d"\n').rules
    assert rules.decide({"vip": 0.0}, {"revenue_total": 0.0}, None, DAY - 1) == []
    assert rules.decide({"vip": 0.0}, {"revenue_total": 0.0}, None, DAY) == [(0, "vip", False)]
    # The held exit is re-checked when the minimum time ends, even without an event.
    assert rules.recheck_at({"vip": 0.0}, {"revenue_total": 0.0}, clock(10.0)) == DAY


def clock(at: float, next_step: float | None = None) -> Clock:
    return Clock(at, lambda _windows: next_step, half_life_s=DAY, fallback_s=7200.0)


def test_time_dependent_rules_are_rechecked_when_they_may_change() -> None:
    config = segments('[rules.recent]\nwhen = "since_last_purchase_s <= 14d"\n'
                      '[rules.rich]\nwhen = "revenue_total > 5"\n'
                      '[rules.busy]\nwhen = "sessions_7d > 3 or search_1h > 9"\n'
                      '[rules.mixed]\nwhen = "age_s - since_last_seen_s > 1d"\n')
    rules = config.rules
    assert [r.time_dependent for r in rules.rules] == [True, False, True, True]
    values = {"since_last_purchase_s": 3 * DAY, "revenue_total": 10.0, "sessions_7d": 4,
              "search_1h": 0, "age_s": 5 * DAY, "since_last_seen_s": 0.0}
    # Exactly when the purchase is 14 days old (a hair after, so that <= has flipped).
    assert rules.recheck_at({"recent": 0.0}, values, clock(100.0)) == pytest.approx(
        100.0 + 11 * DAY + EPSILON)
    assert rules.recheck_at({"rich": 0.0}, values, clock(100.0)) is None
    # Windowed counts change when a bucket leaves a window; without buckets, never.
    assert rules.recheck_at({"busy": 0.0}, values, clock(100.0, next_step=5000.0)) == 5000.0
    assert rules.recheck_at({"busy": 0.0}, values, clock(100.0)) is None
    # Two moving names in one comparison: not predicted, re-checked every `recheck`.
    assert rules.recheck_at({"mixed": 0.0}, values, clock(100.0)) == 100.0 + 7200
    assert rules.recheck_at({}, values, clock(100.0)) is None


def test_a_window_read_by_several_conditions_is_looked_up_once_per_recheck() -> None:
    rules = segments('[rules.busy]\nwhen = "sessions_7d > 3"\nexit_when = "sessions_7d < 2"\n'
                     '[rules.viewer]\nwhen = "product_view_7d > 9"\n'
                     '[rules.buyer]\nwhen = "purchase_30d > 0"\n').rules
    asked: list[frozenset[str]] = []

    def next_step(windows: frozenset[str]) -> float:
        asked.append(windows)
        return 1000.0 if windows == {"7d"} else 500.0

    at = Clock(100.0, next_step, half_life_s=DAY, fallback_s=7200.0)
    members = {"busy": 0.0, "viewer": 0.0, "buyer": 0.0}
    assert rules.recheck_at(members, {}, at) == 500.0
    assert sorted(asked, key=sorted) == [{"30d"}, {"7d"}]


def test_missing_values_and_unknown_statistics_make_conditions_false() -> None:
    rules = segments('[rules.top]\nwhen = "revenue_30d > p90(revenue_30d)"\n').rules
    assert rules.decide({}, {"revenue_30d": 500.0}, None, 0.0) == []
    assert rules.decide({}, {"revenue_30d": 500.0}, lambda fn, name: 400.0, 0.0) == [(0, "top", True)]
    assert rules.decide({}, {"revenue_30d": None}, lambda fn, name: 400.0, 0.0) == []


def test_traits_are_declared_with_a_type() -> None:
    config = segments('[rules.pro]\nwhen = "traits.plan == \\"pro\\""\n', '[traits]\nplan = "string"\n')
    assert config.rules.decide({}, {"traits.plan": "pro"}, None, 0.0) == [(0, "pro", True)]
    with pytest.raises(ExpressionError, match="unknown name 'traits.plan'"):
        segments('[rules.pro]\nwhen = "traits.plan == \\"pro\\""\n')


@pytest.mark.parametrize(
    ("rules", "field", "hint"),
    [
        ('[rules.x]\nexit_when = "events_total > 1"\n', "rules.x.when", "needs a condition"),
        ('[rules.x]\nwhen = "events_total > 1"\nmin_tim = "1d"\n', "rules.x.min_tim", "min_time"),
        ('[rules.x]\nwhen = "events_total > 1"\nmin_time = "a day"\n', "rules.x.min_time",
         "expected a duration"),
        ('[rules.Big-One]\nwhen = "events_total > 1"\n', "rules.Big-One", "lower case"),
        ('[rules.x]\nwhen = 5\n', "rules.x.when", "expected a condition"),
        ('[rule.x]\nwhen = "events_total > 1"\n', "rule", "did you mean 'rules'"),
        ('[settings]\nrecheck = "0s"\n', "settings.recheck", "positive"),
        ('[settings]\nmin_populaton = 5\n', "settings.min_populaton", "min_population"),
        ('[traits]\nplan = "text"\n', "traits.plan", "\"string\""),
    ],
)
def test_bad_rules_name_the_field(rules: str, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        segments(rules)
    assert info.value.field == field
    assert hint in str(info.value)
    assert "test.toml" in str(info.value)


def test_a_bad_condition_names_file_line_column_and_the_unknown_feature() -> None:
    text = JOURNEY + '\n[rules.loyal]\ndescription = "x"\nwhen = "purchases_30d > 5 and revnue_30d > 1"\n'
    with pytest.raises(ExpressionError) as info:
        load_segments_text(text, "mine.toml")
    line = text.splitlines().index('when = "purchases_30d > 5 and revnue_30d > 1"') + 1
    assert (info.value.source, info.value.line, info.value.column, info.value.field) == (
        "mine.toml", line, 23, "rules.loyal.when")
    assert "unknown name 'revnue_30d'; did you mean revenue_30d" in str(info.value)
    bad_op = JOURNEY + '\n[rules.x]\nwhen = "events_total => 1"\n'
    expected = r"mine.toml:11: rules.x.when: column 14: unexpected character '='"
    with pytest.raises(ExpressionError, match=expected):
        load_segments_text(bad_op, "mine.toml")


def test_window_horizons_name_the_features_rules_may_read() -> None:
    with pytest.raises(ExpressionError, match="sessions_14d"):
        load_segments_text(JOURNEY + '[rules.x]\nwhen = "sessions_14d > 1"\n', "t.toml")
    config = load_segments_text(JOURNEY + '[rules.x]\nwhen = "sessions_14d > 1"\n', "t.toml",
                                horizons=("14d",))
    assert config.rules.names == ("x",)


def test_the_default_file_ships_the_seed_examples() -> None:
    config = load_segments_text(DEFAULT_SEGMENTS_FILE.read_text(), "default")
    assert config.rules.names == ("high_value", "loyal", "cart_abandoner", "frequent_visitor",
                                  "recent_purchaser", "new_user", "needs_enrichment")
    assert config.tracked_features == ("aov_90d", "last_purchase", "purchases_90d", "revenue_90d")
    assert config.journey.states == ("awareness", "consideration", "decision", "retention",
                                     "churn_risk", "win_back")


# --- through the user step ------------------------------------------------------------


def event(name: str, ts: float, mid: str, revenue: float = 0.0) -> Stamped:
    doc = (f'{{"type":"track","event":"{name}","userId":"u1","messageId":"{mid}",'
           f'"timestamp":"{iso_utc(ts)}","properties":{{"revenue":{revenue}}}}}')
    parsed = EventParser().parse(doc.encode())
    assert isinstance(parsed, Event)
    return stamp_event(parsed, ts - 1, "clicks:0")


def rule_changes(updates: list[UserUpdate], name: str) -> list[tuple[str, str]]:
    return [(c.change, c.cause) for u in updates for c in u.changes if c.segment == name]


def user_config(rules: str, population: Population | None = None) -> UserConfig:
    config = segments(rules)
    return UserConfig(features=FeatureConfig(journey=config.journey), rules=config.rules,
                      population=population)


def test_recent_purchaser_ends_14_days_after_the_purchase_without_an_event() -> None:
    """A time-dependent rule is re-checked by timer: the exit comes right after 14 days."""
    config = user_config('[rules.recent_purchaser]\nwhen = "since_last_purchase_s <= 14d"\n')
    logic = UserLogic(config)
    updates = logic.on_items([event("Order Completed", T0, "p1", 10.0)])
    assert rule_changes(updates, "recent_purchaser") == [("enter", "p1")]
    updates = logic.on_watermark(T0 + 14 * DAY)
    assert rule_changes(updates, "recent_purchaser") == []
    updates = logic.on_watermark(T0 + 15 * DAY)
    [(change, cause)] = rule_changes(updates, "recent_purchaser")
    assert (change, cause) == ("exit", "timer:rules")
    [exit_] = [c for u in updates for c in u.changes if c.segment == "recent_purchaser"]
    assert T0 + 14 * DAY < exit_.event_time <= T0 + 14 * DAY + 0.01


def test_a_population_rule_reads_the_live_statistics() -> None:
    population = Population(("revenue_total",))
    for value in (10.0, 20.0, 30.0):
        population.replace(None, population.contribution({"revenue_total": value}))
    config = user_config('[rules.top]\nwhen = "revenue_total > p90(revenue_total)"\n', population)
    logic = UserLogic(config)
    updates = logic.on_items([event("Order Completed", T0, "p1", 25.0)])
    assert rule_changes(updates, "top") == []
    updates = logic.on_items([event("Order Completed", T0 + 60, "p2", 25.0)])
    assert rule_changes(updates, "top") == [("enter", "p2")]
    # The user's own value joined the population: four users now.
    assert population.stat("mean", "revenue_total") == (10 + 20 + 30 + 50) / 4


RFM_RULES = """
[rules.champions]
when = "rfm_r >= 4 and rfm_f >= 4 and rfm_m >= 4"
[rules.lapsing]
when = "rfm_r <= 2"
[settings]
min_population = 10
"""


def rfm_population(config: Any) -> Population:
    """The file's population with ten earlier buyers: purchases on days 1-10, i purchases, 20 * i."""
    population = config.new_population()
    for i in range(1, 11):
        population.replace(None, population.contribution(
            {"last_purchase": T0 - 20 * DAY + i * DAY, "purchases_90d": i, "revenue_90d": 20.0 * i}))
    return population


def test_rules_read_rfm_quintiles_against_the_population() -> None:
    """``rfm_r``, ``rfm_f``, ``rfm_m``: the user's quintiles among all buyers; the profile's
    ``rfm`` is the same score."""
    config = segments(RFM_RULES)
    population = rfm_population(config)
    user = UserConfig(features=FeatureConfig(journey=config.journey), rules=config.rules,
                      population=population)
    logic = UserLogic(user)
    updates = logic.on_items([event("Page Viewed", T0, "v1")])
    assert rule_changes(updates, "champions") == rule_changes(updates, "lapsing") == []
    assert updates[-1].profile["rfm"] == ""  # not a buyer
    burst = [event("Order Completed", T0 + 60 * i, f"p{i}", 100.0) for i in range(1, 10)]
    updates = logic.on_items(burst)
    # Rules read the population as it was before the batch (the user joins it at the end):
    # the 7th purchase ranks 7th of 10 others in frequency, mid-rank 6.5/10: quintile 4.
    assert rule_changes(updates, "champions") == [("enter", "p7")]
    # Then the most recent of 11 buyers, 9 purchases (tied 9th-10th), 900 in revenue (11th).
    assert updates[-1].profile["rfm"] == "555"
    assert rule_changes(updates, "lapsing") == []


def test_an_old_buyer_ranks_low_in_recency() -> None:
    config = segments(RFM_RULES)
    population = rfm_population(config)
    logic = UserLogic(UserConfig(features=FeatureConfig(journey=config.journey),
                                 rules=config.rules, population=population))
    updates = logic.on_items([event("Order Completed", T0 - 30 * DAY, "p1", 5.0)])
    assert rule_changes(updates, "lapsing") == [("enter", "p1")]
    assert updates[-1].profile["rfm"] == "111"


def test_without_enough_buyers_no_one_has_a_score() -> None:
    config = segments(RFM_RULES.replace("min_population = 10", "min_population = 50"))
    logic = UserLogic(UserConfig(features=FeatureConfig(journey=config.journey),
                                 rules=config.rules, population=rfm_population(config)))
    updates = logic.on_items([event("Order Completed", T0 - 30 * DAY, "p1", 5.0)])
    assert rule_changes(updates, "lapsing") == []
    assert updates[-1].profile["rfm"] == ""


def test_a_journey_condition_on_rfm_is_checked_at_snapshots() -> None:
    config = segments("", """
[[journey.transitions]]
from = "b"
to = "a"
when = "rfm_r <= 1"
""")
    assert config.journey.transitions[-1].trigger == "snapshot"
    with pytest.raises(ConfigError, match="RFM score"):
        segments("", """
[[journey.transitions]]
from = "b"
to = "a"
on = "purchase"
when = "rfm_r <= 1"
""")


def test_resuming_under_a_file_that_tracks_other_features_recomputes_the_contribution() -> None:
    """The saved contribution follows the old file's features: it is redone, not misread."""
    anyone = "[settings]\nmin_population = 1\n"
    before = segments('[rules.top]\nwhen = "aov_90d > p90(aov_90d)"\n', anyone)
    after = segments('[rules.top]\nwhen = "revenue_total > p90(revenue_total)"\n'
                     '[rules.rich]\nwhen = "engagement > mean(engagement)"\n', anyone)
    old = before.new_population()
    logic = UserLogic(UserConfig(features=FeatureConfig(journey=before.journey),
                                 rules=before.rules, population=old))
    logic.on_items([event("Order Completed", T0, "p1", 40.0)])
    assert old.stat("mean", "aov_90d") == 40.0
    new = after.new_population()
    assert new.layout != old.layout
    resumed = UserLogic(UserConfig(features=FeatureConfig(journey=after.journey),
                                   rules=after.rules, population=new), logic.snapshot())
    assert new.stat("mean", "revenue_total") == 40.0
    assert new.stat("mean", "engagement") is not None
    again = after.new_population()  # a second restart on the same file reads it as saved
    UserLogic(UserConfig(features=FeatureConfig(journey=after.journey), rules=after.rules,
                         population=again), resumed.snapshot())
    assert again.stat("mean", "revenue_total") == 40.0


def journey_changes(updates: list[UserUpdate]) -> list[tuple[str, str, str | None, float]]:
    return [(c.segment, c.cause, c.rule, c.event_time) for u in updates for c in u.changes
            if c.kind == "journey"]


def test_inactivity_moves_to_churn_risk_by_event_time_and_a_return_to_win_back() -> None:
    """The default journey's timer fires when the watermark passes 14 days of inactivity."""
    logic = UserLogic(UserConfig())
    logic.on_items([event("Order Completed", T0, "p1", 10.0)])
    assert journey_changes(logic.on_watermark(T0 + 14 * DAY)) == []  # not past the deadline
    updates = logic.on_watermark(T0 + 14 * DAY + 1)
    assert journey_changes(updates) == [("journey:churn_risk", "timer:journey", "inactive_14d",
                                         T0 + 14 * DAY)]
    updates = logic.on_items([event("Page Viewed", T0 + 20 * DAY, "back")])
    assert journey_changes(updates) == [("journey:win_back", "back", "returned", T0 + 20 * DAY)]


def test_a_return_after_14_days_takes_both_steps_even_if_no_watermark_fired_the_timer() -> None:
    """The timeline decides: the inactivity transition comes first, then the return."""
    logic = UserLogic(UserConfig())
    logic.on_items([event("Order Completed", T0, "p1", 10.0)])
    late_return = event("Page Viewed", T0 + 20 * DAY, "back")
    updates = logic.on_items([late_return._replace(watermark=T0)])  # watermark still at T0
    assert [(s, r) for s, _c, r, _t in journey_changes(updates)] == [
        ("journey:churn_risk", "inactive_14d"), ("journey:win_back", "returned")]


def test_minimum_dwell_in_win_back_through_the_user_step() -> None:
    logic = UserLogic(UserConfig())
    logic.on_items([event("Order Completed", T0, "p1", 10.0)])
    logic.on_watermark(T0 + 15 * DAY)
    back = T0 + 20 * DAY
    logic.on_items([event("Page Viewed", back, "back")])
    early = logic.on_items([event("Checkout Started", back + 1800, "c1")])
    assert journey_changes(early) == []  # 30 min into win_back's 1 h dwell
    later = logic.on_items([event("Checkout Started", back + 7200, "c2")])
    assert [s for s, *_ in journey_changes(later)] == ["journey:decision"]


def test_a_rule_removed_from_the_file_is_left_on_the_next_event() -> None:
    """A changed segments file applies on restart: members of a removed rule leave on their next event."""
    before = user_config('[rules.old]\nwhen = "events_total >= 1"\n')
    logic = UserLogic(before)
    assert rule_changes(logic.on_items([event("Page Viewed", T0, "e1")]), "old") == [("enter", "e1")]
    after = user_config('[rules.new]\nwhen = "events_total >= 1"\n')
    resumed = UserLogic(after, logic.snapshot())
    updates = resumed.on_items([event("Page Viewed", T0 + 60, "e2")])
    assert rule_changes(updates, "old") == [("exit", "e2")]
    assert rule_changes(updates, "new") == [("enter", "e2")]
    assert [c.rule for u in updates for c in u.changes if c.segment == "old"] == ["removed"]
