"""What the parse step costs per message: validation alone, on a generated log.

    python -m benchmarks.parse_cost --events 100000

The parser of the worker's default config reads every line of a generated log
(malformed lines included), with the wall clock read once per pass as the
parse step reads it once per batch. Prints the best of ``--runs`` passes in
microseconds per message. Timing is noisy on a shared machine: for a figure
that repeats, count instructions instead,

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.parse_cost --events 20000 --runs 1

and compare the totals of two commits in one sitting.
"""

from __future__ import annotations

import argparse
import time

from segstream.flows.segmentation import event_parser

from segstream.config import Config
from segstream.tools.generate import generate


def parse_cost(events: int, runs: int, seed: int = 1) -> float:
    """Return the best microseconds per message over ``runs`` passes of a generated log."""
    lines = generate(max(1, events // 50), events, seed).lines
    parser = event_parser(Config())
    best = float("inf")
    for _ in range(runs):
        now = time.time()
        started = time.perf_counter()
        for line in lines:
            parser.parse(line, now=now)
        best = min(best, time.perf_counter() - started)
    return best / len(lines) * 1e6


def main() -> None:
    """Print the parse step's cost per message."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"parse: {parse_cost(args.events, args.runs):.2f} µs per message "
          f"({args.events} generated lines, best of {args.runs})")


if __name__ == "__main__":
    main()
