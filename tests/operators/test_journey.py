"""The journey state machine: data plus a small evaluator, checked at load."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from segstream.errors import ConfigError, ExpressionError
from segstream.operators.features import expression_schema
from segstream.operators.journey import DEFAULT_JOURNEY, IDLE, SNAPSHOT, JourneyConfig

SCHEMA = expression_schema()
JOURNEY = JourneyConfig.from_dict(DEFAULT_JOURNEY, schema=SCHEMA)
DAY = 86400.0


def build(table: dict[str, Any]) -> JourneyConfig:
    return JourneyConfig.from_dict(table, schema=SCHEMA, source="segments.toml")


@pytest.mark.parametrize(
    ("phase", "role", "purchases", "expected"),
    [
        ("awareness", "product_view", 0, "consideration"),
        ("awareness", "search", 0, "consideration"),
        ("awareness", "add_to_cart", 0, "consideration"),
        ("awareness", "page_view", 0, None),
        ("awareness", "checkout", 0, "decision"),
        ("awareness", "purchase", 1, "decision"),
        ("consideration", "checkout", 0, "decision"),
        ("consideration", "product_view", 0, None),
        ("decision", "purchase", 1, None),
        ("decision", "purchase", 2, "retention"),
        ("decision", "checkout", 2, None),
        ("retention", "purchase", 9, None),
        ("retention", "product_view", 9, None),
        ("churn_risk", "page_view", 0, "win_back"),   # any event: the user is back
        ("churn_risk", None, 0, "win_back"),
        ("churn_risk", "purchase", 5, "win_back"),
        ("win_back", "checkout", 0, "decision"),
        ("win_back", "purchase", 2, "decision"),      # the funnel order: decision first
        ("win_back", "product_view", 0, None),
    ],
)
def test_default_event_transitions(phase: str, role: str | None, purchases: int,
                                   expected: str | None) -> None:
    """Every default event transition fires on its role and condition, and nothing else does."""
    step = JOURNEY.on_event(phase, 0.0, role, 100 * DAY, lambda: {"purchases_total": purchases})
    assert (None if step is None else step.target) == expected


@pytest.mark.parametrize("phase", ["awareness", "consideration", "decision", "retention", "win_back"])
def test_any_phase_goes_to_churn_risk_on_the_model_or_after_14_days(phase: str) -> None:
    """`* -> churn_risk` when churn_p > 0.7 (at snapshots) or after 14 days without an event."""
    assert JOURNEY.at_snapshot(phase, 0.0, DAY, {"churn_p": 0.71}, None).target == "churn_risk"
    assert JOURNEY.at_snapshot(phase, 0.0, DAY, {"churn_p": 0.7}, None) is None
    assert JOURNEY.at_snapshot(phase, 0.0, DAY, {"churn_p": None}, None) is None
    deadline, transition = JOURNEY.idle_deadline(phase, 0.0, 5 * DAY)
    assert (deadline, transition.target, transition.name) == (19 * DAY, "churn_risk", "inactive_14d")


def test_churn_risk_does_not_re_enter_itself() -> None:
    assert JOURNEY.idle_deadline("churn_risk", 0.0, DAY) is None
    assert JOURNEY.at_snapshot("churn_risk", 0.0, DAY, {"churn_p": 0.99}, None) is None


def test_minimum_dwell_holds_a_user_in_a_phase() -> None:
    """win_back has a 1 h dwell: events before it are ignored, the idle timer waits for it."""
    since = 10 * DAY
    assert JOURNEY.on_event("win_back", since, "checkout", since + 3599, dict) is None
    assert JOURNEY.on_event("win_back", since, "checkout", since + 3600, dict).target == "decision"
    table = copy.deepcopy(DEFAULT_JOURNEY)
    table["dwell"] = {"retention": "30d"}
    journey = build(table)
    deadline, _ = journey.idle_deadline("retention", since, since + DAY)
    assert deadline == since + 30 * DAY  # the dwell ends after the 14 idle days would


def test_triggers_are_classified() -> None:
    kinds = {t.name: t.trigger for t in JOURNEY.transitions}
    assert kinds["churn_model"] == SNAPSHOT and kinds["inactive_14d"] == IDLE
    assert JOURNEY.reads_models


def test_first_match_wins_in_file_order() -> None:
    """When two transitions match, the earlier one is taken."""
    table = copy.deepcopy(DEFAULT_JOURNEY)
    table["transitions"].insert(0, {"from": ["*"], "to": "retention", "on": ["checkout"]})
    assert build(table).on_event("awareness", 0.0, "checkout", 1.0, dict).target == "retention"


def test_a_condition_without_a_role_fires_on_any_event() -> None:
    table = copy.deepcopy(DEFAULT_JOURNEY)
    table["transitions"].insert(0, {"from": ["*"], "to": "retention", "when": "revenue_total > 100"})
    journey = build(table)
    assert journey.on_event("awareness", 0.0, "page_view", 1.0, lambda: {"revenue_total": 150}
                            ).target == "retention"
    assert journey.on_event("awareness", 0.0, "page_view", 1.0, lambda: {"revenue_total": 50}) is None


def test_transition_names() -> None:
    """Transitions carry a readable name for the change's rule field."""
    assert JOURNEY.on_event("consideration", 0.0, "checkout", 1.0, dict).name == \
        "awareness|consideration|win_back->decision"
    assert JOURNEY.on_event("churn_risk", 0.0, "page_view", 1.0, dict).name == "returned"


@pytest.mark.parametrize(
    ("mutate", "field", "hint"),
    [
        (lambda t: t.update(initial="nowhere"), "journey.initial", "not one of the states"),
        (lambda t: t["transitions"][0].update(to="considration"), "journey.transitions[0].to",
         "did you mean 'consideration'"),
        (lambda t: t["transitions"][1].update(on=["checkuot"]), "journey.transitions[1].on",
         "did you mean 'checkout'"),
        (lambda t: t["transitions"][2].update(when_at_least={"purchases_total": 2}),
         "journey.transitions[2].when_at_least", "when = \"purchases_total >= 2\""),
        (lambda t: t["transitions"][0].update(too="x"), "journey.transitions[0].too", "unknown key"),
        (lambda t: t.update(states=["a", "a"], initial="a"), "journey.states", "unique"),
        (lambda t: t.update(stats=[]), "journey.stats", "did you mean 'states'"),
        (lambda t: t["transitions"][4].update(after="two weeks"), "journey.transitions[4].after",
         "expected a duration"),
        (lambda t: t["transitions"][4].update(on=["purchase"]), "journey.transitions[4]",
         "one trigger"),
        (lambda t: t["transitions"][4].update(when="events_total > 1"), "journey.transitions[4].when",
         "takes no condition"),
        (lambda t: t["transitions"][0].update(when="churn_p > 0.5"), "journey.transitions[0].when",
         "drop 'on'"),
        (lambda t: t["transitions"][0].pop("on"), "journey.transitions[0]", "needs a trigger"),
        (lambda t: t.update(dwell={"nowhere": "1h"}), "journey.dwell.nowhere", "unknown phase"),
    ],
)
def test_bad_journey_names_the_field(mutate, field: str, hint: str) -> None:  # type: ignore[no-untyped-def]
    """A bad journey table fails at load naming the field, with a suggestion where one exists."""
    table = copy.deepcopy(DEFAULT_JOURNEY)
    mutate(table)
    with pytest.raises(ConfigError) as info:
        build(table)
    assert info.value.field == field
    assert hint in str(info.value)
    assert "segments.toml" in str(info.value)


def test_a_bad_condition_points_at_the_file_line_and_name() -> None:
    table = copy.deepcopy(DEFAULT_JOURNEY)
    table["transitions"][2]["when"] = "purchases >= 2"
    with pytest.raises(ExpressionError) as info:
        JourneyConfig.from_dict(table, schema=SCHEMA, source="s.toml",
                                line_of=lambda path: 40 if path == ("journey", "transitions", 2, "when")
                                else 0)
    message = str(info.value)
    assert message.startswith("s.toml:40: journey.transitions[2].when: column 1: unknown name 'purchases'")
    assert "did you mean purchases_" in message
