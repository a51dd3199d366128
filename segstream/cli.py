"""The ``segstream`` command: run, demo, generate, replay, lookup, check-config.

Each subcommand lives in its own module and plugs in through a
``register(subparsers)`` function that adds its parser and sets ``func``;
``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from segstream import __version__
from segstream.errors import SegstreamError


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    from segstream.tools import check_config, demo, generate, lookup, replay, run  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="segstream",
        description="Real-time behavioural user segmentation on Kafka, Bytewax and Redis.",
    )
    parser.add_argument("--version", action="version", version=f"segstream {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, demo, generate, replay, lookup, check_config):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segstream`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SegstreamError as exc:
        print(f"segstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
