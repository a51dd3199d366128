"""``segstream check-config FILE``: validate a segments file and print what it defines.

Parses the journey and every condition exactly as a worker would at start-up
(with the worker config's ``window_horizons`` when ``--config`` or
``SEGSTREAM_CONFIG`` gives one), then prints the state machine (states, dwell,
transitions and their triggers) and the rule segments. Exits 0 when the file is
valid, 2 with the file, line and problem when it is not.
"""

from __future__ import annotations

import argparse
from typing import Any

from segstream.config import load_config, load_segments
from segstream.operators.journey import ANY, EVENT, IDLE, SNAPSHOT, Transition
from segstream.operators.segments import SegmentsConfig


def register(subparsers: Any) -> None:
    """Add the ``check-config`` subcommand."""
    parser = subparsers.add_parser(
        "check-config", help="validate a segments file and print its journey and rules",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="segments file (TOML)")
    parser.add_argument("--config", metavar="FILE",
                        help="worker config, for window_horizons (default: $SEGSTREAM_CONFIG)")
    parser.set_defaults(func=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    horizons = load_config(args.config).window_horizons
    segments = load_segments(args.file, horizons=horizons)
    print(describe(segments))
    return 0


def describe(segments: SegmentsConfig) -> str:
    """Return a readable listing of a segments file's journey and rules.

    >>> from segstream.config import load_segments
    >>> text = describe(load_segments())
    >>> "churn_risk -> win_back  on any event  [returned]" in text
    True
    """
    journey = segments.journey
    lines = [f"segments file {segments.source}: OK", "", "journey",
             f"  states: {', '.join(journey.states)} (initial: {journey.initial})"]
    for phase, seconds in journey.dwell.items():
        lines.append(f"  minimum dwell in {phase}: {_duration(seconds)}")
    lines.append("  transitions, first match wins:")
    for transition in journey.transitions:
        lines.append(f"    {_transition(transition)}")
    lines += ["", "rules (time-dependent ones re-checked without events when they may "
              f"change, or every {_duration(segments.rules.recheck_s)} if that cannot be predicted)"]
    for rule in segments.rules.rules:
        lines.append(f"  {rule.name}: {rule.description}" if rule.description else f"  {rule.name}")
        lines.append(f"    enter when  {rule.when.text}")
        if rule.exit_when is not None:
            lines.append(f"    exit when   {rule.exit_when.text}")
        if rule.min_time_s:
            lines.append(f"    stay at least {_duration(rule.min_time_s)}")
        if rule.time_dependent:
            lines.append("    time-dependent: re-checked without events")
    if segments.statistics:
        stats = sorted({f"{fn}({feature})" for fn, feature in segments.statistics})
        lines += ["", f"population statistics: {', '.join(stats)} (known once "
                  f"{segments.min_population} users have a non-zero value)"]
    trigger = segments.cart_abandoner
    lines += ["", f"cart_abandoned: {trigger.views} product views within "
              f"{_duration(trigger.views_within_s)}, a cart add, no purchase for "
              f"{_duration(trigger.no_purchase_for_s)}"]
    return "\n".join(lines)


def _transition(t: Transition) -> str:
    sources = "any phase" if ANY in t.sources else " | ".join(t.sources)
    trigger = t.trigger
    if trigger == EVENT:
        assert t.on is not None
        how = "on any event" if ANY in t.on else f"on {' | '.join(sorted(t.on))}"
        if t.when is not None:
            how += f" when {t.when.text}"
    elif trigger == IDLE:
        assert t.after_s is not None
        how = f"after {_duration(t.after_s)} without events (event-time timer)"
    elif trigger == SNAPSHOT:
        assert t.when is not None
        how = f"when {t.when.text} (checked at feature snapshots)"
    else:
        assert t.when is not None
        how = f"when {t.when.text} (checked after each event)"
    return f"{sources} -> {t.target}  {how}  [{t.name}]"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
