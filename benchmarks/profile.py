"""Where the full flow's time goes: its stages and hot spots, under cProfile.

    python -m benchmarks.profile --events 200000 --users 20000

The flow is ``build_flow`` with the default segments and models, fed a
generated log by a ``TestingSource`` in batches of ``source_batch_size``, with
in-memory sinks, and the garbage collector tuned as ``segstream run`` tunes it.
So this is the per-event logic alone: the broker, Redis and the sinks' I/O are
what ``make bench`` adds. It runs the log twice, once plain (microseconds per
event) and once under cProfile, and prints:

- the stages of the flow, each with its share of the profiled time, what it
  calls included (rows overlap: the rules are decided inside feature
  snapshots too, and ``features`` is computed by the read-out and by
  snapshots);
- the functions with the most time of their own.

cProfile adds a fixed cost to every call, so it inflates small functions:
read the shares, not the microseconds, and time a change without it (the
plain run's figure, or ``make bench``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from segstream.flows.models import LearnerStep
from segstream.flows.segmentation import Sinks, _UserStep, build_flow, change_messages, parse_batch
from segstream.operators.features import apply_fact, features
from segstream.operators.segments import RuleSet
from segstream.operators.user import _Run, profile_fields

from segstream.config import Config
from segstream.tools.generate import generate
from segstream.tools.run import tune_gc

STAGES: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("parse (a batch of messages into facts)", parse_batch),
    ("user step (per user and batch)", _UserStep.on_batch),
    ("  an event or timer: the rules decided", _Run._publish),
    ("    the rules' conditions", RuleSet.decide),
    ("    the members' next re-check", RuleSet.recheck_at),
    ("  an event applied (to the view, then when it settles)", apply_fact),
    ("  a feature snapshot (predict, publish)", _Run._snapshot),
    ("  the read-out for Redis (per user and batch)", _Run.close),
    ("    the features computed", features),
    ("    the Redis fields formatted", profile_fields),
    ("end of input: every user settled", _UserStep.on_eof),
    ("the model learner", LearnerStep.on_batch),
    ("change messages serialized", change_messages),
)
"""What the stage table lists: a label, and the function whose time (callees included) it is."""


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    label: str
    calls: int
    seconds: float
    share: float


def stage_table(stats: pstats.Stats, stages: Sequence[tuple[str, Callable[..., Any]]] = STAGES
                ) -> list[Stage]:
    """Return each stage's calls, seconds (callees included) and share of the profiled time."""
    total = stats.total_tt  # type: ignore[attr-defined]
    by_code = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, func in stages:
        code = func.__code__
        calls, _, _, cumulative, _ = by_code.get(
            (code.co_filename, code.co_firstlineno, code.co_name), (0, 0, 0.0, 0.0, {}))
        rows.append(Stage(label, calls, cumulative, cumulative / total if total else 0.0))
    return rows


def hot_spots(stats: pstats.Stats, top: int) -> list[tuple[str, int, float, float]]:
    """Return the ``top`` functions by own time: ``(where, calls, own s, share)``."""
    total = stats.total_tt  # type: ignore[attr-defined]
    root = str(Path(__file__).resolve().parents[1]) + "/"
    rows = []
    for (filename, line, name), (_, calls, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename.removeprefix(root)}:{line}({name})" if line else name
        rows.append((where, calls, own, own / total if total else 0.0))
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:top]


def run_flow(lines: Sequence[bytes], config: Config) -> int:
    """Run the flow over ``lines`` once; return the number of Redis updates it made."""
    items = [KafkaSourceMessage(key=None, value=line, topic="clickstream", partition=0, offset=i)
             for i, line in enumerate(lines)]
    kafka_out: list[object] = []
    redis_out: list[object] = []
    flow = build_flow(config, source=TestingSource(items, batch_size=config.source_batch_size),
                      sinks=Sinks(kafka=TestingSink(kafka_out), redis=TestingSink(redis_out)))
    run_main(flow)
    return len(redis_out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=25, help="functions listed by own time")
    ap.add_argument("--save", type=Path, help="also write the raw profile here (pstats format)")
    args = ap.parse_args(argv)
    config = Config()
    tune_gc(config.gc_threshold)
    lines = generate(args.users, args.events, seed=1).lines
    started = time.perf_counter()
    updates = run_flow(lines, config)
    plain = time.perf_counter() - started
    profiler = cProfile.Profile()
    profiler.runcall(run_flow, lines, config)
    stats = pstats.Stats(profiler)
    if args.save is not None:
        stats.dump_stats(args.save)
    print(f"log: {args.events} events, {args.users} users; {updates} Redis updates")
    print(f"plain run: {plain:.1f} s, {args.events / plain:,.0f} events/s, "
          f"{plain * 1e6 / args.events:.1f} µs per event")
    print(f"profiled run: {stats.total_tt:.1f} s"  # type: ignore[attr-defined]
          " (shares below are of this; rows overlap, see the module's doc)")
    print(f"{'stage':<58}{'calls':>10}{'s':>8}{'share':>8}")
    for row in stage_table(stats):
        print(f"{row.label:<58}{row.calls:>10}{row.seconds:>8.1f}{row.share:>8.1%}")
    print(f"\n{'function (own time)':<78}{'calls':>10}{'s':>8}{'share':>8}")
    for where, calls, own, share in hot_spots(stats, args.top):
        print(f"{where[-78:]:<78}{calls:>10}{own:>8.2f}{share:>8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
