"""One setting, several values: the full flow on the same log, runs alternated.

    python -m benchmarks.variants SEGSTREAM_GC_THRESHOLD=0 SEGSTREAM_GC_THRESHOLD=50000
    python -m benchmarks.variants --events 300000 --users 100000 --rounds 2 --scenario full_2p \\
        --recovery SEGSTREAM_RECOVERY_PARTITIONS=16 SEGSTREAM_RECOVERY_PARTITIONS=64

How an optimisation behind a setting is measured: like ``make bench``
(``benchmarks/bench.py``), a generated log goes into a two-partition topic on a
Tansu broker, and a scenario's processes read it to the end, start-up included.
Each variant is one ``NAME=VALUE`` environment setting (``NAME=VALUE,NAME=VALUE``
for several at once; ``--recovery`` gives every run a recovery store of its
own); the variants run one after the other, ``--rounds`` times
round, so a drift of the machine touches them all alike. Printed: each run's
events/s and worker CPU seconds, and each variant's median.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from benchmarks.bench import SCENARIOS, run_scenario, staged_log


def parse_variant(text: str) -> dict[str, str]:
    """``A=1,B=2`` -> ``{"A": "1", "B": "2"}``; a part without ``=`` is refused.

    >>> parse_variant("SEGSTREAM_GC_THRESHOLD=0")
    {'SEGSTREAM_GC_THRESHOLD': '0'}
    """
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            msg = f"variant {text!r}: expected NAME=VALUE[,NAME=VALUE...]"
            raise ValueError(msg)
        out[name.strip()] = value.strip()
    return out


def run_variants(variants: Sequence[str], *, events: int, users: int, rounds: int,
                 scenario: str = "full", seed: int = 1, timeout_s: float = 3600.0,
                 recovery: bool = False) -> list[tuple[str, int, float, float]]:
    """Run ``scenario`` once per variant per round; return ``(variant, events, seconds, cpu)``."""
    settings = [parse_variant(v) for v in variants]
    runs = []
    with staged_log(events, users, seed=seed) as stage:
        for round_ in range(rounds):
            for index, (variant, setting) in enumerate(zip(variants, settings, strict=True)):
                seconds, used, _processes = run_scenario(
                    stage, scenario, f"v{index}-{round_}", env=setting, recovery=recovery,
                    timeout_s=timeout_s)
                runs.append((variant, stage.sent, seconds, used["workers"]))
                print(f"{variant:<40} round {round_ + 1}: {stage.sent / seconds:>8,.0f} events/s, "
                      f"worker CPU {used['workers']:.1f} s", flush=True)
    return runs


def summary(runs: Sequence[tuple[str, int, float, float]]) -> str:
    """Each variant's median events/s and worker CPU seconds."""
    lines = [f"{'variant':<40} {'runs':>4} {'events/s':>10} {'worker CPU s':>12}"]
    for variant in dict.fromkeys(v for v, *_ in runs):
        mine = [(events / seconds, cpu) for v, events, seconds, cpu in runs if v == variant]
        lines.append(f"{variant:<40} {len(mine):>4} "
                     f"{statistics.median(r for r, _ in mine):>10,.0f} "
                     f"{statistics.median(c for _, c in mine):>12.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.variants NAME=VALUE ...``."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", metavar="NAME=VALUE[,NAME=VALUE]")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scenario", default="full", choices=[s for s in SCENARIOS if s != "ceiling"])
    ap.add_argument("--recovery", action="store_true",
                    help="give every run Bytewax recovery in a fresh directory (off otherwise)")
    args = ap.parse_args(argv)
    try:
        for variant in args.variants:
            parse_variant(variant)
    except ValueError as exc:
        ap.error(str(exc))
    runs = run_variants(args.variants, events=args.events, users=args.users, rounds=args.rounds,
                        scenario=args.scenario, recovery=args.recovery)
    print(summary(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
