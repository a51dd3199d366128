"""When a rule's condition can next change with time alone: re-check then, not every hour.

A member of a rule that reads time-dependent features must be re-checked
without events (``recent_purchaser`` ends 14 days after the purchase even if
the user never returns). Re-checking on a fixed period costs a full evaluation
per user per period: with an hourly period, 20 evaluations per event on a
typical log. Instead each comparison in the condition predicts the earliest
time its result may flip, from how its names move (``features.time_behaviour``):

- one second per second (``since_last_purchase_s <= 14d``, ``age_s < 7d``)
  against a constant: exactly when the value reaches the constant;
- exponential decay (``engagement > 5``) against a constant: exactly when it
  decays to it;
- in steps (windowed counts and sums, ``aov_90d``): when the next bucket leaves
  a window, from the user's buckets;
- anything else (a mix, arithmetic of two moving names): ``recheck`` later.

A condition can only change when one of its comparisons does, so the earliest
prediction is a safe re-check time. Predictions are a hair (:data:`EPSILON`)
after the exact crossing, so that ``<=`` has flipped when evaluated.

>>> from segstream.operators.expressions import NUMBER, parse
>>> rule = parse("age_s < 7d or engagement > 4", {"age_s": NUMBER, "engagement": NUMBER})
>>> clock = Clock(at=0.0, next_step=lambda windows: None, half_life_s=86400.0, fallback_s=3600.0)
>>> next_change(rule, {"age_s": 6 * 86400.0, "engagement": 8.0}, {"age_s": "linear",
...             "engagement": "decay"}, clock)  # engagement halves to 4 in a day, age hits 7d then
86400.001
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from segstream.operators.expressions import Expression, Node

LINEAR, STEP, DECAY = "linear", "step", "decay"
"""How a name moves with time (see ``features.time_behaviour``); a step name's
move is ``step:<horizon>``, the window it is counted in."""

EPSILON = 0.001
"""Seconds after a predicted crossing that the re-check is due."""


class Clock(NamedTuple):
    """What moves a user's values between events, as of one evaluation.

    Attributes:
        at: the evaluation's event time.
        next_step: when a value of one of the given windows (``{"7d"}``) next changes
            (``None``: never), computed on demand.
        half_life_s: engagement's half-life.
        fallback_s: re-check period for conditions whose next change cannot be predicted.

    """

    at: float
    next_step: Callable[[frozenset[str]], float | None]
    half_life_s: float
    fallback_s: float


def step(horizon: str) -> str:
    """Return the move of a name counted in the window ``horizon``.

    >>> step("7d")
    'step:7d'
    """
    return f"{STEP}:{horizon}"


Planner = Callable[[Mapping[str, Any], Clock], "float | None"]
"""A compiled :func:`next_change` of one expression: ``(values, clock) -> time or None``."""


def planner(expression: Expression, moves: Mapping[str, str]) -> Planner | None:
    """Compile :func:`next_change` for ``expression`` (``None``: it never changes by time alone).

    What depends only on the expression and ``moves`` (the names each
    comparison reads, how they move, which case applies) is worked out here
    once, not at every evaluation: rules are re-planned after every event.

    >>> from segstream.operators.expressions import NUMBER, parse
    >>> plan = planner(parse("age_s < 7d", {"age_s": NUMBER}), {"age_s": "linear"})
    >>> clock = Clock(at=0.0, next_step=lambda windows: None, half_life_s=1.0, fallback_s=1.0)
    >>> plan({"age_s": 86400.0}, clock)
    518400.001
    >>> planner(parse("age_s < 7d", {"age_s": NUMBER}), {}) is None
    True
    """
    return _plan(expression.root, moves)


def next_change(expression: Expression, values: Mapping[str, Any], moves: Mapping[str, str],
                clock: Clock) -> float | None:
    """Return the earliest time after ``clock.at`` that ``expression`` may change with no event.

    ``None``: not by time alone. ``values``: what it was just evaluated on.
    To evaluate one expression many times, compile it once with :func:`planner`.
    """
    plan = planner(expression, moves)
    return None if plan is None else plan(values, clock)


def _fallback(values: Mapping[str, Any], clock: Clock) -> float | None:
    return clock.at + clock.fallback_s


def _plan(node: Node, moves: Mapping[str, str]) -> Planner | None:
    kind = node.kind
    if kind == "cmp":
        return _plan_comparison(node, moves)
    if kind == "name":  # a bare bool name
        return _fallback if node.value in moves else None
    plans = [plan for plan in (_plan(child, moves) for child in node.children) if plan is not None]
    if len(plans) <= 1:
        return plans[0] if plans else None

    def earliest(values: Mapping[str, Any], clock: Clock) -> float | None:
        best = None
        for plan in plans:
            due = plan(values, clock)
            if due is not None and (best is None or due < best):
                best = due
        return best
    return earliest


def _plan_comparison(node: Node, moves: Mapping[str, str]) -> Planner | None:
    names = _names(node)
    moving = {moves[name] for name in names if name in moves}
    if not moving:
        return None
    if all(move.startswith(STEP) for move in moving):
        horizons = frozenset(move[len(STEP) + 1:] for move in moving)
        return lambda values, clock: clock.next_step(horizons)
    left, right = node.children
    if len(names) != 1 or node.value not in ("<", "<=", ">", ">="):
        return _fallback
    if left.kind == "name" and right.kind == "num":
        name, constant = left.value, float(right.value)
    elif right.kind == "name" and left.kind == "num":
        name, constant = right.value, float(left.value)
    else:
        return _fallback
    move = moves[name]

    def crossing(values: Mapping[str, Any], clock: Clock) -> float | None:
        value = values.get(name)
        if value is None:  # no purchase yet: stays missing until an event
            return None
        at = _crossing(move, float(value), constant, clock)
        # Never at ``at`` itself: a timer due now would fire again and again.
        return None if at is None else max(at, clock.at) + EPSILON
    return crossing


def _crossing(move: str, value: float, constant: float, clock: Clock) -> float | None:
    """When a value moving by ``move`` reaches ``constant`` (``None``: it never will)."""
    if move == LINEAR:  # increases one second per second
        return clock.at + (constant - value) if constant >= value else None
    # Decays towards 0: reaches a positive constant at or below it, never anything else.
    if 0 < constant <= value:
        return clock.at + clock.half_life_s * math.log2(value / constant)
    return None


def _names(node: Node) -> set[str]:
    if node.kind == "name":
        return {node.value}
    out: set[str] = set()
    for child in node.children:
        out |= _names(child)
    return out
