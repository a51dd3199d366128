"""The journey state machine: data plus a small evaluator, checked at load."""

from __future__ import annotations

import copy

import pytest

from segstream.errors import ConfigError
from segstream.operators.journey import DEFAULT_JOURNEY, JourneyConfig

JOURNEY = JourneyConfig.from_dict(DEFAULT_JOURNEY)


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
    ],
)
def test_default_transitions(phase: str, role: str, purchases: int, expected: str | None) -> None:
    """Every default transition fires on its role and guard, and nothing else does."""
    step = JOURNEY.step(phase, role, {"purchases_total": float(purchases)})
    assert (None if step is None else step.target) == expected


def test_first_match_wins_in_file_order() -> None:
    """When two transitions match, the earlier one is taken."""
    table = copy.deepcopy(DEFAULT_JOURNEY)
    table["transitions"].insert(0, {"from": ["*"], "to": "retention", "on": ["checkout"]})
    journey = JourneyConfig.from_dict(table)
    assert journey.step("awareness", "checkout", {}).target == "retention"


def test_transition_name() -> None:
    """Transitions carry a readable name for the change's rule field."""
    assert JOURNEY.step("consideration", "checkout", {}).name == "awareness|consideration->decision"


@pytest.mark.parametrize(
    ("mutate", "field", "hint"),
    [
        (lambda t: t.update(initial="nowhere"), "journey.initial", "not one of the states"),
        (lambda t: t["transitions"][0].update(to="considration"), "journey.transitions[0].to",
         "did you mean 'consideration'"),
        (lambda t: t["transitions"][1].update(on=["checkuot"]), "journey.transitions[1].on",
         "did you mean 'checkout'"),
        (lambda t: t["transitions"][2].update(when_at_least={"purchases": 2}),
         "journey.transitions[2].when_at_least.purchases", "did you mean 'purchases_total'"),
        (lambda t: t["transitions"][2].update(when_at_least={"purchases_total": "2"}),
         "journey.transitions[2].when_at_least.purchases_total", "expected a number"),
        (lambda t: t["transitions"][0].update(too="x"), "journey.transitions[0].too", "unknown key"),
        (lambda t: t.update(states=["a", "a"], initial="a"), "journey.states", "unique"),
        (lambda t: t.update(stats=[]), "journey.stats", "did you mean 'states'"),
    ],
)
def test_bad_journey_names_the_field(mutate, field: str, hint: str) -> None:  # type: ignore[no-untyped-def]
    """A bad journey table fails at load naming the field, with a suggestion where one exists."""
    table = copy.deepcopy(DEFAULT_JOURNEY)
    mutate(table)
    with pytest.raises(ConfigError) as info:
        JourneyConfig.from_dict(table, source="segments.toml")
    assert info.value.field == field
    assert hint in str(info.value)
    assert "segments.toml" in str(info.value)
