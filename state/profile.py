"""Per-user state: the profile every segment is computed from, and what it costs.

A user's :class:`UserState` has three parts:

- ``settled``: a :class:`Profile` built from the user's on-time events older
  than their watermark, applied in ``(timestamp, messageId)`` order, with the
  timers that fired between them;
- ``pending``: the on-time events not yet below the watermark, as compact
  :class:`Fact` tuples in timeline order (a handful at most);
- what was *published*: version, journey phase, rule segments, so changes are
  the difference between that and the current view.

Everything is bounded by construction (counters, timestamps, sparse bucket
lists, a few recent timestamps; never a list of events beyond ``pending``) and
serializes to one compact, versioned byte string, which is also how the user
step keeps idle users in memory (see ``operators/user.py``).

>>> state = UserState("u1")
>>> state.version, state.settled.events_total
(0, 0)
>>> UserState.from_bytes(state.to_bytes()) == state
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, NamedTuple

import orjson

from segstream.errors import StateError

STATE_FORMAT = 6
"""Bumped whenever the byte layout changes; older snapshots are refused with advice."""

NO_WATERMARK = float("-inf")
"""Watermark of a user that has seen none yet."""

TraitValue = str | int | float | bool


class Fact(NamedTuple):
    """What the timeline needs of one event: a compact tuple, never the event's dicts.

    Attributes:
        ts: event time, epoch seconds.
        message_id: ``messageId`` (orders equal timestamps; the ``cause`` of changes).
        role: semantic role, if any.
        revenue: purchase revenue (0.0 otherwise).
        call: Segment call type (``track``, ``identify``...).
        device: ``context.device.type``, if a non-empty string.
        country: ``context.location.country``, if a non-empty string.
        channel: ``context.campaign.source``, if a non-empty string.
        traits: scalar traits of the call (already cut to size), or ``None``.

    """

    ts: float
    message_id: str
    role: str | None
    revenue: float
    call: str
    device: str | None
    country: str | None
    channel: str | None
    traits: dict[str, TraitValue] | None


@dataclass(slots=True)
class Profile:
    """A user's features, as built by applying their timeline in order.

    The meaning of each field is the contract in ``docs/features.md``.
    """

    events_total: int = 0
    late_total: int = 0
    on_time_total: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    last_active: float | None = None
    """The time of the newest late event when it is newer than ``last_seen`` (``None``:
    ``last_seen`` is the newest event). Eviction counts idleness from the newer of the
    two; kept apart so the common case costs a ``null`` in the snapshot, not a time."""
    sessions_total: int = 0
    session_start: float | None = None
    session_events: int = 0
    bounces: int = 0
    """Finished sessions with exactly one event (the current one is judged live)."""
    purchases_total: int = 0
    revenue_total: float = 0.0
    last_purchase: float | None = None
    buckets: list[list[list[float]]] = field(default_factory=list)
    engagement: float = 0.0
    """Decayed engagement as of ``last_seen``."""
    device: str | None = None
    country: str | None = None
    channel: str | None = None
    traits: dict[str, TraitValue] = field(default_factory=dict)
    recent_views: list[float] = field(default_factory=list)
    """Times of the latest product views, as many as the cart trigger needs."""
    cart_deadline: float | None = None
    cart_member: bool = False
    cart_abandoned_total: int = 0
    journey: str | None = None
    journey_rule: str | None = None
    """The transition that led to ``journey`` (``start`` for the initial phase)."""
    journey_since: float | None = None
    """Event time the user entered ``journey`` (for the minimum dwell and inactivity timers)."""
    since_snapshot: int = 0
    """Settled events since the user's last feature snapshot."""
    snapshot_session: int = 0
    """``sessions_total`` when the last session-end snapshot was taken (one per session)."""
    label_at: float | None = None
    """Event time of the session-end snapshot awaiting its churn label."""
    label_p: float | None = None
    """The churn probability published for that snapshot (``None``: none was)."""
    cluster: str | None = None
    """Published cluster (``unassigned`` before the clusterer is warm; ``None``: no snapshot yet)."""
    churn_p: float | None = None
    """Churn probability of the latest snapshot, once the churn model is warm."""
    churn_band: str | None = None
    """Published churn band (``low``, ``medium``, ``high``)."""
    model_version: int = 0
    """Version of the models behind ``cluster`` and ``churn_p``."""

    def copy(self) -> Profile:
        """Return an independent copy (the mutable parts are copied too)."""
        clone = Profile(*_profile_values(self))
        clone.buckets = [[bucket[:] for bucket in level] for level in self.buckets]
        clone.traits = dict(self.traits)
        clone.recent_views = self.recent_views[:]
        return clone


@dataclass(slots=True)
class UserState:
    """Everything segstream keeps about one user.

    Attributes:
        user_id: the state key (``userId``, else ``anonymousId``).
        version: the user's last version: of their last published change, or
            reserved by a feature snapshot for a model decision.
        published_journey: journey phase last published.
        published_segments: rule segments last published, with the time each was entered.
        recheck_at: event time the rules are next due to be re-checked without an event.
        contributed: the user's values in the population statistics (``None``: none).
        contributed_layout: the population layout ``contributed`` follows (the
            tracked features change with the segments file).
        watermark: the largest watermark this user has seen.
        clock: the input partition (``topic:partition``) of the user's latest event.
        pending: on-time events at or above ``watermark``, in timeline order.
        settled: the profile of the events below the watermark.

    """

    user_id: str
    version: int = 0
    published_journey: str | None = None
    published_segments: dict[str, float] = field(default_factory=dict)
    recheck_at: float | None = None
    contributed: list[float | None] | None = None
    contributed_layout: int | None = None
    watermark: float = NO_WATERMARK
    clock: str = ""
    pending: list[Fact] = field(default_factory=list)
    settled: Profile = field(default_factory=Profile)

    def to_bytes(self) -> bytes:
        """Serialize to a compact, versioned byte string (the recovery snapshot)."""
        settled = self.settled
        return exact_json([
            STATE_FORMAT, self.user_id, self.version, self.published_journey,
            self.published_segments, self.recheck_at, self.contributed, self.contributed_layout,
            None if self.watermark == NO_WATERMARK else self.watermark,
            self.clock, [tuple(fact) for fact in self.pending],
            *_profile_values(settled),
        ])

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
        expected = _HEAD + len(_PROFILE_FIELDS)
        if fmt == 5 and len(values) == expected - 1:
            # Format 5 had no last_active: a resumed user has no late event newer than last_seen.
            values.insert(_HEAD + _PROFILE_FIELDS.index("last_active"), None)
            fmt = STATE_FORMAT
        if fmt != STATE_FORMAT or len(values) != expected:
            msg = (
                f"snapshot format {fmt!r} with {len(values)} values, expected format "
                f"{STATE_FORMAT} with {expected}: delete the recovery directory "
                "and replay the input to rebuild state"
            )
            raise StateError(user_id, msg)
        (user_id, version, journey, segments, recheck_at, contributed, layout, watermark, clock,
         pending) = values[:_HEAD]
        return cls(
            user_id, version, journey, segments, recheck_at, contributed, layout,
            NO_WATERMARK if watermark is None else watermark, clock,
            [Fact(*fact) for fact in pending], Profile(*values[_HEAD:]),
        )


    @staticmethod
    def user_id_of(data: bytes) -> str:
        """Read the user id from :meth:`to_bytes` output without rebuilding the state.

        >>> UserState.user_id_of(UserState("u1").to_bytes())
        'u1'
        """
        try:
            return str(orjson.loads(data)[1])
        except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
            raise StateError("?", f"snapshot is not readable: {exc}") from exc


def exact_json(value: Any) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own size.

    orjson hands out its whole output buffer (4 KiB and up) as the bytes object;
    what is held for long (a user's state, an update waiting for its sink) would
    cost that much each.

    >>> exact_json({"events_total": "3"}) == orjson.dumps({"events_total": "3"})
    True
    """
    return bytes(memoryview(orjson.dumps(value)))


_PROFILE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Profile))
_profile_values = attrgetter(*_PROFILE_FIELDS)
_HEAD = 10  # values before the profile's: user_id .. pending

