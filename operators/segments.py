"""Rule segments and the segments file: data (TOML) plus a small evaluator.

A rule segment is a condition over a user's features, traits, journey phase,
model outputs and population statistics::

    [rules.loyal]
    when = "purchases_30d > 5"

    [rules.high_value]
    when = "aov_90d > mean(aov_90d) + 2 * std(aov_90d)"
    exit_when = "aov_90d < mean(aov_90d) + 1.5 * std(aov_90d)"   # hysteresis
    min_time = "1d"                                              # and a minimum stay

A user enters when ``when`` holds. A member leaves when ``exit_when`` holds and
``when`` no longer does (without ``exit_when``: when ``when`` no longer holds),
and not before ``min_time`` after entering. Rules are evaluated after every
event, timer and feature snapshot of the user; rules that read time-dependent
features (windows, recency, engagement) are also re-checked while the user is
a member, when their conditions may next change (``operators/rechecks.py``), so
that, say, ``recent_purchaser`` ends 14 days after the purchase even if the
user never comes back (``docs/segments.md``).

>>> from segstream.operators.features import expression_schema
>>> config = load_segments_text('''
... [journey]
... states = ["new", "buyer"]
... initial = "new"
... [[journey.transitions]]
... from = "new"
... to = "buyer"
... on = "purchase"
... [rules.big_spender]
... when = "revenue_total > 100"
... ''', "example.toml")
>>> [rule.name for rule in config.rules.rules], config.journey.states
(['big_spender'], ('new', 'buyer'))
>>> config.rules.decide({}, {"revenue_total": 150.0}, None, 0.0)
[(0, 'big_spender', True)]
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from segstream.operators.expressions import BOOL, NUMBER, STRING, Expression, Stats
from segstream.operators.features import (
    DEFAULT_HORIZONS,
    TIMESTAMP_FEATURES,
    CartTrigger,
    expression_schema,
    time_behaviour,
)
from segstream.operators.journey import JourneyConfig, condition, duration
from segstream.operators.population import TIMESTAMP_BIN_S, Bins, Population
from segstream.operators.rechecks import Clock, Planner, planner
from segstream.operators.rfm import RFM_FEATURES
from segstream.operators.windows import WindowLayout

from segstream.errors import ConfigError, suggest

DEFAULT_RECHECK_S = 3600.0
DEFAULT_MIN_POPULATION = 100
DEFAULT_SEGMENTS_FILE = Path(str(files("segstream") / "defaults" / "segments.toml"))
"""The embedded default segments file."""
TRAIT_TYPES = {"number": NUMBER, "string": STRING, "bool": BOOL}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule segment.

    Attributes:
        name: the segment id (``loyal``); carried on its changes as ``rule``.
        when: the condition to enter.
        exit_when: the condition to leave (``None``: when ``when`` stops holding).
        min_time_s: minimum seconds in the segment before leaving.
        description: for people (``check-config``, docs).
        time_dependent: reads a feature that changes with time alone.

    """

    name: str
    when: Expression
    exit_when: Expression | None = None
    min_time_s: float = 0.0
    description: str = ""
    time_dependent: bool = False

    def enters(self, values: Mapping[str, Any], stats: Stats | None) -> bool:
        """Return whether a non-member enters."""
        return self.when.evaluate(values, stats)

    def leaves(self, values: Mapping[str, Any], stats: Stats | None, since: float, at: float) -> bool:
        """Return whether a member who entered at ``since`` leaves at ``at``."""
        if at < since + self.min_time_s or self.when.evaluate(values, stats):
            return False
        return self.exit_when is None or self.exit_when.evaluate(values, stats)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rule segments, in file order (each has a fixed version slot, see ``operators/user.py``).

    Attributes:
        rules: the rules.
        recheck_s: event time between re-checks of a member of a time-dependent rule
            whose next change cannot be predicted (``operators/rechecks.py``).
        moves: the names that change with time alone, and how.

    """

    rules: tuple[Rule, ...] = ()
    recheck_s: float = DEFAULT_RECHECK_S
    moves: Mapping[str, str] = field(default_factory=dict)
    _planners: Mapping[str, tuple[Planner, ...]] = field(init=False, repr=False, compare=False)
    """Per time-dependent rule, its conditions' compiled re-check planners."""

    def __post_init__(self) -> None:
        planners = {
            rule.name: tuple(plan for expression in (rule.when, rule.exit_when)
                             if expression is not None
                             and (plan := planner(expression, self.moves)) is not None)
            for rule in self.rules if rule.time_dependent
        }
        object.__setattr__(self, "_planners", planners)

    def decide(
        self, members: Mapping[str, float], values: Mapping[str, Any], stats: Stats | None,
        at: float,
    ) -> list[tuple[int, str, bool]]:
        """Return the changes at ``at``: ``(slot, rule, entered)``; ``members``: rule -> entered at."""
        out = []
        for slot, rule in enumerate(self.rules):
            since = members.get(rule.name)
            if since is None:
                if rule.enters(values, stats):
                    out.append((slot, rule.name, True))
            elif rule.leaves(values, stats, since, at):
                out.append((slot, rule.name, False))
        return out

    def recheck_at(self, members: Mapping[str, float], values: Mapping[str, Any],
                   clock: Clock) -> float | None:
        """Return when a member's segments must be re-checked without an event (``None``: never).

        ``values``: what the rules were just evaluated on, at ``clock.at``. Due at
        the end of a ``min_time`` (an exit may have been held back), and when a
        time-dependent rule's conditions may next change (``operators/rechecks.py``).
        """
        best = None
        steps: dict[frozenset[str], float | None] = {}

        def next_step(horizons: frozenset[str]) -> float | None:
            # Conditions of several rules (or both of one) often read the same window.
            if horizons not in steps:
                steps[horizons] = clock.next_step(horizons)
            return steps[horizons]

        shared: Clock | None = None
        for rule in self.rules:
            since = members.get(rule.name)
            if since is None:
                continue
            candidates: list[float | None] = []
            if rule.min_time_s and since + rule.min_time_s > clock.at:
                candidates.append(since + rule.min_time_s)
            planners = self._planners.get(rule.name)
            if planners:
                if shared is None:
                    shared = clock._replace(next_step=next_step)
                candidates.extend(plan(values, shared) for plan in planners)
            for due in candidates:
                if due is not None and (best is None or due < best):
                    best = due
        return best

    @property
    def names(self) -> tuple[str, ...]:
        """Rule names, in slot order."""
        return tuple(rule.name for rule in self.rules)

    @property
    def statistics(self) -> list[tuple[str, str]]:
        """Population statistics the rules read."""
        return [s for rule in self.rules for e in (rule.when, rule.exit_when) if e is not None
                for s in e.statistics]


@dataclass(frozen=True, slots=True)
class SegmentsConfig:
    """The segments file, checked: the journey state machine, rule segments and triggers.

    Attributes:
        journey: the journey-phase state machine.
        source: the file it came from.
        rules: the rule segments.
        cart_abandoner: the cart-abandonment trigger (``[triggers.cart_abandoner]``).
        traits: declared trait types (``[traits]``), readable as ``traits.<name>``.
        min_population: users a feature's population needs before its statistics are known.

    """

    journey: JourneyConfig
    source: str
    rules: RuleSet = field(default_factory=RuleSet)
    cart_abandoner: CartTrigger = CartTrigger()
    traits: Mapping[str, str] = field(default_factory=dict)
    min_population: int = DEFAULT_MIN_POPULATION

    @property
    def statistics(self) -> list[tuple[str, str]]:
        """Every population statistic the file reads."""
        return [*self.journey.statistics, *self.rules.statistics]

    @property
    def tracked_features(self) -> tuple[str, ...]:
        """Features whose population must be tracked, sorted.

        Those of the statistics the file reads, and the RFM score's (the Redis
        profile always carries it).
        """
        return tuple(sorted({feature for _fn, feature in self.statistics} | set(RFM_FEATURES)))

    def new_population(self) -> Population:
        """Return an empty population tracking what this file reads (timestamps by the hour)."""
        tracked = self.tracked_features
        return Population(tracked, min_users=self.min_population,
                          bins={name: Bins(TIMESTAMP_BIN_S) for name in tracked
                                if name in TIMESTAMP_FEATURES})


SECTIONS = ("journey", "rules", "triggers", "traits", "settings")


@cache
def default_segments() -> SegmentsConfig:
    """Return the embedded default segments file, checked (with the default window horizons)."""
    return load_segments_text(DEFAULT_SEGMENTS_FILE.read_text(encoding="utf-8"),
                              str(DEFAULT_SEGMENTS_FILE))


def load_segments_text(
    text: str, source: str, *, horizons: tuple[str, ...] = DEFAULT_HORIZONS
) -> SegmentsConfig:
    """Parse and check a segments file's text; ``horizons`` name the window features.

    Raises:
        ConfigError: naming the file and the field at fault.
        ExpressionError: a condition does not parse, with file, line and column.

    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("segments_file", source, f"not valid TOML: {exc}") from exc
    for key in document:
        if key not in SECTIONS:
            raise ConfigError(key, source, "unknown section" + suggest(key, SECTIONS))
    if "journey" not in document:
        raise ConfigError("journey", source, "the segments file needs a [journey] table")
    lines = TomlLines(text)
    traits = _traits(document.get("traits", {}), source)
    layout = WindowLayout.build(horizons)
    schema = expression_schema(layout, traits)
    moves = time_behaviour(layout)
    settings = document.get("settings", {})
    known = ("recheck", "min_population")
    if not isinstance(settings, dict):
        raise ConfigError("settings", source, "expected a table")
    for key in settings:
        if key not in known:
            raise ConfigError(f"settings.{key}", source, "unknown setting" + suggest(key, known))
    recheck = duration(settings["recheck"], "settings.recheck", source) if "recheck" in settings \
        else DEFAULT_RECHECK_S
    if recheck <= 0:
        raise ConfigError("settings.recheck", source, "must be a positive duration")
    min_population = _positive_int(settings.get("min_population", DEFAULT_MIN_POPULATION),
                                   "settings.min_population", source)
    return SegmentsConfig(
        journey=JourneyConfig.from_dict(document["journey"], schema=schema, source=source,
                                        line_of=lines.line_of),
        source=source,
        rules=RuleSet(_rules(document.get("rules", {}), source, schema, lines, moves), recheck,
                      moves),
        cart_abandoner=_cart_trigger(document.get("triggers", {}), source),
        traits=traits,
        min_population=min_population,
    )


def _traits(table: Any, source: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError("traits", source, "expected a table name = \"number\" | \"string\" | \"bool\"")
    out = {}
    for name, kind in table.items():
        if kind not in TRAIT_TYPES:
            raise ConfigError(f"traits.{name}", source,
                              f"expected \"number\", \"string\" or \"bool\", got {kind!r}")
        out[name] = TRAIT_TYPES[kind]
    return out


def _rules(
    table: Any, source: str, schema: Mapping[str, str], lines: TomlLines,
    moves: Mapping[str, str],
) -> tuple[Rule, ...]:
    if not isinstance(table, dict):
        raise ConfigError("rules", source, "expected tables [rules.<name>]")
    rules = []
    allowed = ("when", "exit_when", "min_time", "description")
    for name, raw in table.items():
        field_ = f"rules.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ConfigError(field_, source,
                              "a rule name is lower case letters, digits and _ (it is a segment id)")
        if not isinstance(raw, dict):
            raise ConfigError(field_, source, "expected a table with when = \"...\"")
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{field_}.{key}", source, "unknown key" + suggest(key, allowed))
        if "when" not in raw:
            raise ConfigError(f"{field_}.when", source, "a rule needs a condition: when = \"...\"")
        expressions = {}
        for key in ("when", "exit_when"):
            if key not in raw:
                continue
            expressions[key] = condition(raw[key], schema, source, f"{field_}.{key}",
                                         lines.line_of(("rules", name, key)))
        min_time = duration(raw["min_time"], f"{field_}.min_time", source) if "min_time" in raw \
            else 0.0
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{field_}.description", source, "expected text")
        reads = set(expressions["when"].names)
        if "exit_when" in expressions:
            reads |= expressions["exit_when"].names
        rules.append(Rule(name, expressions["when"], expressions.get("exit_when"), min_time,
                          description, bool(reads & moves.keys())))
    return tuple(rules)


def _cart_trigger(table: Any, source: str) -> CartTrigger:
    """Read ``[triggers.cart_abandoner]``: ``views``, ``views_within``, ``no_purchase_for``."""
    if not isinstance(table, dict):
        raise ConfigError("triggers", source, "expected a table of triggers")
    for key in table:
        if key != "cart_abandoner":
            raise ConfigError(f"triggers.{key}", source,
                              "unknown trigger" + suggest(key, ["cart_abandoner"]))
    table = table.get("cart_abandoner", {})
    prefix = "triggers.cart_abandoner"
    if not isinstance(table, dict):
        raise ConfigError(prefix, source, "expected a table")
    known = ["views", "views_within", "no_purchase_for"]
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", source, "unknown key" + suggest(key, known))
    default = CartTrigger()
    return CartTrigger(
        views=_positive_int(table.get("views", default.views), f"{prefix}.views", source),
        views_within_s=duration(table["views_within"], f"{prefix}.views_within", source)
        if "views_within" in table else default.views_within_s,
        no_purchase_for_s=duration(table["no_purchase_for"], f"{prefix}.no_purchase_for", source)
        if "no_purchase_for" in table else default.no_purchase_for_s,
    )


def _positive_int(raw: Any, field: str, source: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(field, source, f"expected an integer >= 1, got {raw!r}")
    return raw


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\"'-]+)\s*=")


class TomlLines:
    """Find the line of a key in TOML text, for error messages (``tomllib`` keeps no positions).

    A path is the table path then the key: ``("rules", "loyal", "when")``, or
    ``("journey", "transitions", 2, "when")`` for the third ``[[journey.transitions]]``.
    Keys written as inline tables fall back to the line of their table's key.

    >>> text = chr(10).join(['[rules.a]', 'when = "x"', '[[t]]', 'k = 1', '[[t]]', 'k = 2'])
    >>> TomlLines(text).line_of(("t", 1, "k")), TomlLines(text).line_of(("rules", "a", "when"))
    (6, 2)
    """

    def __init__(self, text: str) -> None:
        """Index every ``key = ...`` line under its table path."""
        self.lines: dict[tuple[Any, ...], int] = {}
        arrays: dict[tuple[str, ...], int] = {}
        table: tuple[Any, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header is not None:
                parts = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    arrays[parts] = arrays.get(parts, -1) + 1
                    table = (*parts, arrays[parts])
                else:
                    table = parts
                self.lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key is not None:
                self.lines.setdefault((*table, key.group(1).strip("\"'")), number)

    def line_of(self, path: tuple[Any, ...]) -> int:
        """Return the 1-based line of ``path``, of its nearest enclosing key, or 0."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 0

