"""The one exception root of segstream and its specific subclasses.

Bad *input* is never an exception: the parser returns a ``Rejected`` value that
is routed to the dead-letter topic. Exceptions are for bad configuration (fail
at start-up, naming the field) and for bugs or broken infrastructure.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidate, or ``""`` (for error messages).

    >>> suggest("stats", ["states", "initial"])
    "; did you mean 'states'?"
    """
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """A setting is unknown, missing or invalid.

    Args:
        field: the setting's name as the user wrote it (``brokers``,
            ``taxonomy.purchase``, ``SEGSTREAM_BROKERS``).
        source: where the value came from (a file path, ``environment``,
            ``default``).
        problem: what is wrong and, where possible, what would be right.

    """

    def __init__(self, field: str, source: str, problem: str) -> None:
        self.field = field
        self.source = source
        self.problem = problem
        super().__init__(f"config field {field!r} (from {source}): {problem}")


class ExpressionError(SegstreamError):
    """A segment expression does not parse or does not type-check.

    Args:
        source: where the expression was written (a file, a rule name).
        line: line of the expression in that file (1-based; 0 if unknown).
        column: column of the problem within the expression (1-based).
        problem: what is wrong and, where possible, what would be right.
        field: the setting that holds the expression (``rules.loyal.when``), if any.

    """

    def __init__(self, source: str, line: int, column: int, problem: str, field: str = "") -> None:
        self.source = source
        self.line = line
        self.column = column
        self.problem = problem
        self.field = field
        where = f"{source}:{line}" if line else source
        if field:
            where += f": {field}"
        super().__init__(f"{where}: column {column}: {problem}")


class StateError(SegstreamError):
    """Per-user state could not be (de)serialized; names the key involved."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"state for key {key!r}: {problem}")


class ServiceError(SegstreamError):
    """A local service (broker, redis-server) the CLI starts did not come up."""
