"""The journey-phase state machine: data (the ``[journey]`` table) plus a small evaluator.

Runs inside the per-user step, after the profile has taken the event. Input is
the user's current phase, the event's role and the user's features; output is
the :class:`Transition` to take, if any. Transitions are tried in file order and
the first that matches wins; a user without a phase enters ``initial``.

A transition matches when the user is in one of its ``from`` phases (``"*"``
means any), the event plays one of its ``on`` roles, and every feature named
in ``when_at_least`` has at least that value (after the event is applied).

>>> journey = JourneyConfig.from_dict(DEFAULT_JOURNEY)
>>> journey.step("awareness", "product_view", {}).target
'consideration'
>>> journey.step("decision", "purchase", {"purchases_total": 1.0}) is None
True
>>> journey.step("decision", "purchase", {"purchases_total": 2.0}).name
'decision->retention'
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from segstream.operators.taxonomy import ROLES
from segstream.state.profile import HEADLINE_FEATURES

from segstream.errors import ConfigError

ANY_PHASE = "*"

DEFAULT_JOURNEY: dict[str, Any] = {
    "states": ["awareness", "consideration", "decision", "retention"],
    "initial": "awareness",
    "transitions": [
        {"from": ["awareness"], "to": "consideration",
         "on": ["product_view", "search", "add_to_cart"]},
        {"from": ["awareness", "consideration"], "to": "decision", "on": ["checkout", "purchase"]},
        {"from": ["decision"], "to": "retention", "on": ["purchase"],
         "when_at_least": {"purchases_total": 2}},
    ],
}
"""The built-in journey, the same as ``[journey]`` in the embedded segments file."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of the journey state machine.

    Attributes:
        sources: phases it leaves (``("*",)`` for any).
        target: phase it enters.
        on: roles that trigger it.
        when_at_least: ``(feature, minimum)`` guards, all of which must hold.

    """

    sources: tuple[str, ...]
    target: str
    on: frozenset[str]
    when_at_least: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        """Readable id carried on changes, e.g. ``consideration->decision``."""
        return f"{'|'.join(self.sources)}->{self.target}"

    def matches(self, phase: str, role: str | None, features: Mapping[str, float]) -> bool:
        """Return whether this transition fires for ``phase`` on ``role``."""
        if role not in self.on:
            return False
        if phase not in self.sources and ANY_PHASE not in self.sources:
            return False
        return all(features.get(name, 0.0) >= minimum for name, minimum in self.when_at_least)


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    """A checked journey state machine.

    Attributes:
        states: every phase, in funnel order.
        initial: the phase a new user enters on their first event.
        transitions: edges, tried in order.

    """

    states: tuple[str, ...]
    initial: str
    transitions: tuple[Transition, ...]

    def step(
        self, phase: str, role: str | None, features: Mapping[str, float]
    ) -> Transition | None:
        """Return the first transition from ``phase`` that the event triggers, if any."""
        for transition in self.transitions:
            if transition.target != phase and transition.matches(phase, role, features):
                return transition
        return None

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], *, source: str = "journey") -> JourneyConfig:
        """Build and check a journey from a ``[journey]`` TOML table.

        Raises:
            ConfigError: naming the offending field, e.g. ``journey.transitions[2].on``.

        """
        known = {"states", "initial", "transitions"}
        for key in table:
            if key not in known:
                raise ConfigError(f"journey.{key}", source, "unknown key" + _suggest(key, known))
        states = _str_list(table.get("states"), "journey.states", source)
        if len(set(states)) != len(states):
            raise ConfigError("journey.states", source, "states must be unique")
        initial = table.get("initial")
        if initial not in states:
            raise ConfigError(
                "journey.initial", source, f"{initial!r} is not one of the states {states}"
            )
        raw_transitions = table.get("transitions", [])
        if not isinstance(raw_transitions, list):
            raise ConfigError("journey.transitions", source, "expected an array of tables")
        transitions = tuple(
            _transition(raw, f"journey.transitions[{i}]", source, states)
            for i, raw in enumerate(raw_transitions)
        )
        return cls(states=tuple(states), initial=str(initial), transitions=transitions)


def _suggest(name: str, candidates: Sequence[str] | set[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _str_list(raw: Any, field: str, source: str) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(field, source, f"expected a non-empty list of names, got {raw!r}")
    return list(raw)


def _transition(raw: Any, field: str, source: str, states: list[str]) -> Transition:
    if not isinstance(raw, dict):
        raise ConfigError(field, source, "expected a table with from, to, on")
    allowed = {"from", "to", "on", "when_at_least"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{field}.{key}", source, "unknown key" + _suggest(key, allowed))
    sources = _str_list(raw.get("from", [ANY_PHASE]), f"{field}.from", source)
    for phase in sources:
        if phase != ANY_PHASE and phase not in states:
            raise ConfigError(
                f"{field}.from", source, f"unknown phase {phase!r}" + _suggest(phase, states)
            )
    target = raw.get("to")
    if target not in states:
        raise ConfigError(
            f"{field}.to", source, f"unknown phase {target!r}" + _suggest(str(target), states)
        )
    roles = _str_list(raw.get("on"), f"{field}.on", source)
    for role in roles:
        if role not in ROLES:
            raise ConfigError(
                f"{field}.on", source, f"unknown role {role!r}" + _suggest(role, ROLES)
            )
    guards_raw = raw.get("when_at_least", {})
    if not isinstance(guards_raw, dict):
        raise ConfigError(f"{field}.when_at_least", source, "expected a table feature = minimum")
    guards = []
    for feature, minimum in guards_raw.items():
        if feature not in HEADLINE_FEATURES:
            raise ConfigError(
                f"{field}.when_at_least.{feature}", source,
                "unknown feature" + _suggest(feature, HEADLINE_FEATURES),
            )
        if isinstance(minimum, bool) or not isinstance(minimum, int | float):
            raise ConfigError(
                f"{field}.when_at_least.{feature}", source, f"expected a number, got {minimum!r}"
            )
        guards.append((feature, float(minimum)))
    return Transition(tuple(sources), str(target), frozenset(roles), tuple(guards))
