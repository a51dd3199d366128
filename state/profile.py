"""Per-user state: the profile every segment is computed from.

A :class:`UserState` is what Bytewax snapshots for each user key. It is bounded
by construction (counters and timestamps, never a list of events), copies what
it needs from an event and never keeps the event's dicts, and serializes to a
small versioned byte string for recovery.

>>> state = UserState("u1")
>>> state.events_total, state.version
(0, 0)
>>> UserState.from_bytes(state.to_bytes()) == state
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import orjson

from segstream.errors import StateError

STATE_FORMAT = 1
"""Bumped whenever the byte layout changes; older snapshots are migrated or refused."""

HEADLINE_FEATURES = (
    "events_total",
    "sessions_total",
    "purchases_total",
    "revenue_total",
)
"""Numeric profile features, by the names DESIGN.md fixes for Redis and rules."""


@dataclass(slots=True)
class UserState:
    """Everything segstream knows about one user.

    Attributes:
        user_id: the state key (``userId``, else ``anonymousId``).
        version: version of the user's last change; the next change gets ``version + 1``.
        events_total: events applied.
        sessions_total: sessions started (a gap longer than the session gap starts one).
        purchases_total: events with the ``purchase`` role.
        revenue_total: sum of purchase revenue.
        first_seen: earliest event time seen (epoch seconds), ``None`` before any event.
        last_seen: latest event time seen (epoch seconds), ``None`` before any event.
        journey: current journey phase, ``None`` before the first event.

    """

    user_id: str
    version: int = 0
    events_total: int = 0
    sessions_total: int = 0
    purchases_total: int = 0
    revenue_total: float = 0.0
    first_seen: float | None = None
    last_seen: float | None = None
    journey: str | None = None

    def features(self) -> dict[str, float]:
        """Return the numeric features rules and journey guards may read.

        >>> UserState("u1", events_total=3).features()["events_total"]
        3.0
        """
        return {name: float(getattr(self, name)) for name in HEADLINE_FEATURES}

    def merge(self, other: UserState) -> None:
        """Fold ``other`` (e.g. an anonymous history) into this state.

        Counters add, time bounds widen; the journey keeps this state's phase
        unless it has none. ``version`` takes the larger, so it never moves back.
        """
        self.version = max(self.version, other.version)
        self.events_total += other.events_total
        self.sessions_total += other.sessions_total
        self.purchases_total += other.purchases_total
        self.revenue_total += other.revenue_total
        self.first_seen = _min_opt(self.first_seen, other.first_seen)
        self.last_seen = _max_opt(self.last_seen, other.last_seen)
        if self.journey is None:
            self.journey = other.journey

    def to_bytes(self) -> bytes:
        """Serialize to a compact, versioned byte string (the recovery snapshot)."""
        return orjson.dumps([STATE_FORMAT, *(getattr(self, f.name) for f in _FIELDS)])

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Rebuild a state from :meth:`to_bytes` output.

        Raises:
            StateError: the bytes are not a snapshot this version can read.

        """
        try:
            fmt, *values = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise StateError("?", f"snapshot is not readable: {exc}") from exc
        user_id = str(values[0]) if values else "?"
        if fmt != STATE_FORMAT or len(values) != len(_FIELDS):
            msg = (
                f"snapshot format {fmt!r} with {len(values)} values, expected format "
                f"{STATE_FORMAT} with {len(_FIELDS)}: delete the recovery directory "
                "and replay the input to rebuild state"
            )
            raise StateError(user_id, msg)
        return cls(*values)


_FIELDS = fields(UserState)


def _min_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
