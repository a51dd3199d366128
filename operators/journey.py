"""The journey-phase state machine: data (the ``[journey]`` table) plus a small evaluator.

A user is in one phase at a time. Transitions are tried in file order and the
first that matches wins; a user without a phase enters ``initial``. A
transition leaves the phases in ``from`` (``"*"``: any phase but its target)
and is triggered one of three ways:

- ``on = [roles]``: by an event playing one of the roles (``"*"``: any event),
  if its ``when`` condition, if any, holds on the user's features after the event;
- ``when`` alone: by any event after which the condition holds; a condition
  that reads a model output (``churn_p``, ``cluster``, ``churn_band``), the
  RFM score (``rfm_r``...) or a population statistic is instead checked at
  each feature snapshot, when those change (``docs/segments.md``);
- ``after = "14d"``: by an event-time timer, that long after the user's latest
  event: it fires when the watermark passes it, or, if the user comes back
  later than that, just before their next event (the timeline decides, not
  arrival times).

A user leaves a phase no sooner than its minimum dwell (``min_dwell``, per
phase in ``[journey.dwell]``) after entering it; an event that would have
moved them earlier does not, and is not remembered.

>>> from segstream.operators.features import expression_schema
>>> journey = JourneyConfig.from_dict(DEFAULT_JOURNEY, schema=expression_schema())
>>> journey.on_event("awareness", 0.0, "product_view", 10.0, dict).target
'consideration'
>>> journey.on_event("decision", 0.0, "purchase", 10.0, lambda: {"purchases_total": 1}) is None
True
>>> journey.on_event("decision", 0.0, "purchase", 10.0, lambda: {"purchases_total": 2}).name
'decision|win_back->retention'
>>> deadline, transition = journey.idle_deadline("retention", 0.0, 100.0)
>>> deadline - 100.0, transition.target
(1209600.0, 'churn_risk')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segstream.operators.expressions import Expression, Stats, parse
from segstream.operators.rfm import RFM_NAMES
from segstream.operators.taxonomy import ROLES
from segstream.operators.windows import parse_duration

from segstream.errors import ConfigError, suggest

ANY = "*"
"""In ``from``: any phase but the target. In ``on``: any event."""

MODEL_OUTPUTS = frozenset({"cluster", "churn_p", "churn_band"})
"""Names decided by the models, which change at feature snapshots only."""
SNAPSHOT_NAMES = MODEL_OUTPUTS | frozenset(RFM_NAMES)
"""Names that other users move too (models, the RFM score): a condition reading them,
or a population statistic, is checked at feature snapshots."""

FUNNEL = ["awareness", "consideration", "decision", "retention"]

DEFAULT_JOURNEY: dict[str, Any] = {
    "states": [*FUNNEL, "churn_risk", "win_back"],
    "initial": "awareness",
    "dwell": {"win_back": "1h"},
    "transitions": [
        {"from": ["awareness"], "to": "consideration",
         "on": ["product_view", "search", "add_to_cart"]},
        {"from": ["awareness", "consideration", "win_back"], "to": "decision",
         "on": ["checkout", "purchase"]},
        {"from": ["decision", "win_back"], "to": "retention", "on": ["purchase"],
         "when": "purchases_total >= 2"},
        {"from": ["*"], "to": "churn_risk", "when": "churn_p > 0.7", "name": "churn_model"},
        {"from": ["*"], "to": "churn_risk", "after": "14d", "name": "inactive_14d"},
        {"from": ["churn_risk"], "to": "win_back", "on": ["*"], "name": "returned"},
    ],
}
"""The built-in journey, the same as ``[journey]`` in the embedded segments file."""

EVENT, CONDITION, SNAPSHOT, IDLE = "event", "condition", "snapshot", "idle"
"""How a transition is triggered (:attr:`Transition.trigger`)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of the journey state machine.

    Attributes:
        sources: phases it leaves (``("*",)``: any but the target).
        target: phase it enters.
        name: carried on the changes it causes (default ``from->to``).
        on: roles that trigger it (``"*"`` in it: any event); ``None``: no event role.
        when: condition on the user's features, model outputs and statistics.
        after_s: inactivity that triggers it, seconds (an event-time timer).

    """

    sources: tuple[str, ...]
    target: str
    name: str
    on: frozenset[str] | None = None
    when: Expression | None = None
    after_s: float | None = None

    @property
    def trigger(self) -> str:
        """``event``, ``condition`` (checked after events), ``snapshot`` or ``idle``."""
        if self.after_s is not None:
            return IDLE
        if self.on is not None:
            return EVENT
        assert self.when is not None
        return SNAPSHOT if changes_at_snapshots(self.when) else CONDITION

    def leaves(self, phase: str) -> bool:
        """Return whether this transition can take a user out of ``phase``."""
        return phase != self.target and (phase in self.sources or ANY in self.sources)


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    """A checked journey state machine.

    Attributes:
        states: every phase, in funnel order.
        initial: the phase a new user enters on their first event.
        transitions: edges, tried in order.
        dwell: minimum seconds in a phase before leaving it (phases not listed: 0).

    """

    states: tuple[str, ...]
    initial: str
    transitions: tuple[Transition, ...]
    dwell: Mapping[str, float] = field(default_factory=dict)

    def can_leave(self, phase: str, since: float | None, at: float) -> bool:
        """Return whether a user who entered ``phase`` at ``since`` may leave it at ``at``."""
        return since is None or at >= since + self.dwell.get(phase, 0.0)

    def on_event(
        self, phase: str, since: float | None, role: str | None, at: float,
        values: Callable[[], Mapping[str, Any]],
    ) -> Transition | None:
        """Return the transition an event at ``at`` takes (``values``: features after it, lazily)."""
        if not self.can_leave(phase, since, at):
            return None
        found: Mapping[str, Any] | None = None
        for transition in self.transitions:
            trigger = transition.trigger
            if trigger in (IDLE, SNAPSHOT) or not transition.leaves(phase):
                continue
            on = transition.on
            if on is not None and role not in on and ANY not in on:
                continue
            if transition.when is not None:
                if found is None:
                    found = values()
                if not transition.when.evaluate(found):
                    continue
            return transition
        return None

    def at_snapshot(
        self, phase: str, since: float | None, at: float, values: Mapping[str, Any],
        stats: Stats | None,
    ) -> Transition | None:
        """Return the snapshot-checked transition (models, statistics) taken at ``at``, if any."""
        if not self.can_leave(phase, since, at):
            return None
        for transition in self.transitions:
            if (transition.trigger == SNAPSHOT and transition.leaves(phase)
                    and transition.when is not None and transition.when.evaluate(values, stats)):
                return transition
        return None

    def idle_deadline(
        self, phase: str, since: float | None, last_seen: float
    ) -> tuple[float, Transition] | None:
        """Return when inactivity moves a user on, and how (``None``: it never does)."""
        best: tuple[float, Transition] | None = None
        earliest = since + self.dwell.get(phase, 0.0) if since is not None else last_seen
        for transition in self.transitions:
            if transition.after_s is None or not transition.leaves(phase):
                continue
            deadline = max(last_seen + transition.after_s, earliest)
            if best is None or deadline < best[0]:
                best = (deadline, transition)
        return best

    @property
    def reads_models(self) -> bool:
        """Whether some transition waits for snapshots (model outputs or statistics)."""
        return any(t.trigger == SNAPSHOT for t in self.transitions)

    @property
    def statistics(self) -> list[tuple[str, str]]:
        """Population statistics the conditions read."""
        return [s for t in self.transitions if t.when is not None for s in t.when.statistics]

    @classmethod
    def from_dict(
        cls, table: Mapping[str, Any], *, schema: Mapping[str, str], source: str = "journey",
        line_of: Callable[[tuple[Any, ...]], int] = lambda _path: 0,
    ) -> JourneyConfig:
        """Build and check a journey from a ``[journey]`` TOML table.

        ``schema`` is what conditions may read (``features.expression_schema``);
        ``line_of`` finds the file line of a key path, for error messages.

        Raises:
            ConfigError: naming the offending field, e.g. ``journey.transitions[2].on``.
            ExpressionError: a condition does not parse, with file, line and column.

        """
        known = {"states", "initial", "transitions", "min_dwell", "dwell"}
        for key in table:
            if key not in known:
                raise ConfigError(f"journey.{key}", source, "unknown key" + suggest(key, known))
        states = str_list(table.get("states"), "journey.states", source)
        if len(set(states)) != len(states):
            raise ConfigError("journey.states", source, "states must be unique")
        initial = table.get("initial")
        if initial not in states:
            raise ConfigError(
                "journey.initial", source, f"{initial!r} is not one of the states {states}"
            )
        dwell = _dwell(table, states, source)
        raw_transitions = table.get("transitions", [])
        if not isinstance(raw_transitions, list):
            raise ConfigError("journey.transitions", source, "expected an array of tables")
        transitions = tuple(
            _transition(raw, i, source, states, schema, line_of)
            for i, raw in enumerate(raw_transitions)
        )
        return cls(states=tuple(states), initial=str(initial), transitions=transitions, dwell=dwell)


def str_list(raw: Any, field: str, source: str) -> list[str]:
    """Return a non-empty list of names (a lone string is a list of one)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(field, source, f"expected a non-empty list of names, got {raw!r}")
    return list(raw)


def changes_at_snapshots(when: Expression) -> bool:
    """Whether a condition reads what only feature snapshots move (models, RFM, statistics)."""
    return bool(when.statistics) or bool(when.names & SNAPSHOT_NAMES)


def condition(raw: Any, schema: Mapping[str, str], source: str, field: str, line: int) -> Expression:
    """Parse the condition setting ``field`` (text), at ``line`` of ``source``.

    Raises:
        ConfigError: the setting is not text.
        ExpressionError: the text does not parse or type-check.

    """
    if not isinstance(raw, str):
        raise ConfigError(field, source, f"expected a condition, got {raw!r}")
    return parse(raw, schema, source=source, field=field, line=line)


def duration(raw: Any, field: str, source: str) -> float:
    """Return seconds from ``"10m"``-style text."""
    if not isinstance(raw, str):
        raise ConfigError(field, source, f"expected a duration like \"30m\" or \"14d\", got {raw!r}")
    try:
        return float(parse_duration(raw))
    except ValueError as exc:
        raise ConfigError(field, source, str(exc)) from exc


def _dwell(table: Mapping[str, Any], states: list[str], source: str) -> dict[str, float]:
    default = duration(table["min_dwell"], "journey.min_dwell", source) if "min_dwell" in table else 0.0
    dwell = dict.fromkeys(states, default)
    per_phase = table.get("dwell", {})
    if not isinstance(per_phase, dict):
        raise ConfigError("journey.dwell", source, "expected a table phase = \"duration\"")
    for phase, raw in per_phase.items():
        if phase not in states:
            raise ConfigError(f"journey.dwell.{phase}", source,
                              "unknown phase" + suggest(phase, states))
        dwell[phase] = duration(raw, f"journey.dwell.{phase}", source)
    return {phase: seconds for phase, seconds in dwell.items() if seconds}


def _transition(
    raw: Any, index: int, source: str, states: list[str], schema: Mapping[str, str],
    line_of: Callable[[tuple[Any, ...]], int],
) -> Transition:
    field = f"journey.transitions[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(field, source, "expected a table with from, to and on, when or after")
    allowed = {"from", "to", "on", "when", "after", "name"}
    for key in raw:
        if key == "when_at_least":
            raise ConfigError(f"{field}.when_at_least", source,
                              "replaced by a condition: when = \"purchases_total >= 2\"")
        if key not in allowed:
            raise ConfigError(f"{field}.{key}", source, "unknown key" + suggest(key, allowed))
    sources = str_list(raw.get("from", [ANY]), f"{field}.from", source)
    for phase in sources:
        if phase != ANY and phase not in states:
            raise ConfigError(
                f"{field}.from", source, f"unknown phase {phase!r}" + suggest(phase, states)
            )
    target = raw.get("to")
    if target not in states:
        raise ConfigError(
            f"{field}.to", source, f"unknown phase {target!r}" + suggest(str(target), states)
        )
    on = None
    if "on" in raw:
        roles = str_list(raw["on"], f"{field}.on", source)
        for role in roles:
            if role != ANY and role not in ROLES:
                raise ConfigError(
                    f"{field}.on", source, f"unknown role {role!r}" + suggest(role, ROLES)
                )
        on = frozenset(roles)
    when = condition(raw["when"], schema, source, f"{field}.when",
                     line_of(("journey", "transitions", index, "when"))) if "when" in raw else None
    after = duration(raw["after"], f"{field}.after", source) if "after" in raw else None
    triggers = [name for name, given in (("on", on), ("after", after)) if given is not None]
    if len(triggers) > 1:
        raise ConfigError(field, source, "give one trigger: on (events) or after (inactivity)")
    if after is not None and when is not None:
        raise ConfigError(f"{field}.when", source,
                          "an 'after' transition takes no condition: inactivity is its trigger")
    if not triggers and when is None:
        raise ConfigError(field, source, "needs a trigger: on = [roles], when = \"...\" or after")
    if on is not None and when is not None and changes_at_snapshots(when):
        raise ConfigError(
            f"{field}.when", source,
            "reads a model output, the RFM score or a population statistic, which change at feature "
            "snapshots: drop 'on' to check it at each snapshot",
        )
    name = raw.get("name", f"{'|'.join(sources)}->{target}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{field}.name", source, f"expected a non-empty name, got {name!r}")
    return Transition(tuple(sources), str(target), name, on, when, after)
