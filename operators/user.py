"""The per-user step: apply events to a user's profile and detect membership changes.

Keyed by user in the flow. Input is the batch of a user's :class:`Event` s that
arrived together; output is one :class:`UserUpdate` (the profile to write to
Redis and the :class:`Change` s to publish), or nothing if the batch changed
nothing. Hooks mirror Bytewax's stateful logic, so the glue in ``flows/`` is
one line: ``on_batch(events)``, ``snapshot()``.

Event time: ``first_seen``/``last_seen`` are the min/max event time, so they do
not depend on arrival order. A session starts when an event is more than the
session gap after the latest event seen so far; an event older than that
latest event joins the current session (the windowed-state work replaces this
with an exact, lateness-bounded order).

>>> from segstream.operators.parse import EventParser
>>> logic = UserLogic.build(UserConfig(), None)
>>> raw = b'{"event":"Product Viewed","userId":"u1","timestamp":"2024-05-01T10:00:00Z"}'
>>> update = logic.on_batch([EventParser().parse(raw)])
>>> [(c.segment, c.previous, c.version) for c in update.changes]
[('journey:awareness', None, 1), ('journey:consideration', 'journey:awareness', 2)]
>>> update.profile["events_total"], update.profile["journey"]
('1', 'consideration')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from segstream.operators.events import Change, Event, iso_utc
from segstream.operators.journey import DEFAULT_JOURNEY, JourneyConfig
from segstream.state.profile import UserState

JOURNEY = "journey"
# Rule segments arrive with the rules issue; until then every profile has none.
_NO_RULE_SEGMENTS = orjson.dumps([]).decode()
ENTER = "enter"
EXIT = "exit"


def journey_segment(phase: str) -> str:
    """Segment id of a journey phase (single-valued kinds are qualified by kind).

    >>> journey_segment("decision")
    'journey:decision'
    """
    return f"{JOURNEY}:{phase}"


@dataclass(frozen=True, slots=True)
class UserConfig:
    """Settings of the per-user step.

    Attributes:
        journey: the journey state machine.
        session_gap_s: inactivity (event time) that starts a new session.

    """

    journey: JourneyConfig = field(default_factory=lambda: JourneyConfig.from_dict(DEFAULT_JOURNEY))
    session_gap_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """What one batch did to one user: the Redis profile and the changes to publish.

    Attributes:
        user_id: the user.
        version: the user's version after the batch (Redis never moves it back).
        events_total: events applied so far; orders updates of the same version.
        profile: Redis hash fields (strings), headline features included.
        changes: membership changes, in version order.

    """

    user_id: str
    version: int
    events_total: int
    profile: dict[str, str]
    changes: tuple[Change, ...]


class UserLogic:
    """Stateful logic of one user; holds a :class:`UserState` once the first event came."""

    __slots__ = ("config", "state")

    def __init__(self, config: UserConfig, state: UserState | None) -> None:
        self.config = config
        self.state = state

    @classmethod
    def build(cls, config: UserConfig, resume: bytes | None) -> UserLogic:
        """Create the logic of one user key, from a snapshot when resuming."""
        return cls(config, None if resume is None else UserState.from_bytes(resume))

    def on_event(self, event: Event) -> list[Change]:
        """Apply one event and return the changes it caused."""
        state = self.state
        if state is None:
            state = self.state = UserState(event.key)
        ts = event.timestamp
        if state.last_seen is None or ts - state.last_seen > self.config.session_gap_s:
            state.sessions_total += 1
        state.events_total += 1
        if event.role == "purchase":
            state.purchases_total += 1
            state.revenue_total += event.revenue
        if state.first_seen is None or ts < state.first_seen:
            state.first_seen = ts
        if state.last_seen is None or ts > state.last_seen:
            state.last_seen = ts

        changes: list[Change] = []
        journey = self.config.journey
        if state.journey is None:
            changes.append(self._enter(journey.initial, None, ts, event.message_id, "start"))
        phase = state.journey
        assert phase is not None  # set by _enter above
        transition = journey.step(phase, event.role, state.features())
        if transition is not None:
            changes.append(
                self._enter(transition.target, phase, ts, event.message_id, transition.name)
            )
        return changes

    def on_batch(self, events: Iterable[Event]) -> UserUpdate | None:
        """Apply a batch of one user's events; return the update, or None if empty."""
        changes: list[Change] = []
        applied = False
        for event in events:
            changes.extend(self.on_event(event))
            applied = True
        state = self.state
        if not applied or state is None:
            return None
        return UserUpdate(
            user_id=state.user_id,
            version=state.version,
            events_total=state.events_total,
            profile=profile_fields(state),
            changes=tuple(changes),
        )

    def snapshot(self) -> bytes | None:
        """Return an immutable copy of the state for Bytewax recovery."""
        return None if self.state is None else self.state.to_bytes()

    def _enter(
        self, phase: str, previous: str | None, ts: float, cause: str, rule: str
    ) -> Change:
        state = self.state
        assert state is not None  # on_event creates it first
        state.version += 1
        state.journey = phase
        return Change(
            user_id=state.user_id,
            kind=JOURNEY,
            segment=journey_segment(phase),
            change=ENTER,
            previous=None if previous is None else journey_segment(previous),
            event_time=ts,
            version=state.version,
            cause=cause,
            rule=rule,
        )


def profile_fields(state: UserState) -> dict[str, str]:
    """Return the Redis profile hash fields of a state (``updated_at`` is the sink's).

    >>> fields = profile_fields(UserState("u1", events_total=2, first_seen=0.0, last_seen=60.0))
    >>> fields["events_total"], fields["last_seen"], fields["segments"]
    ('2', '1970-01-01T00:01:00.000Z', '[]')
    """
    return {
        "journey": state.journey or "",
        "segments": _NO_RULE_SEGMENTS,
        "version": str(state.version),
        "events_total": str(state.events_total),
        "sessions_total": str(state.sessions_total),
        "purchases_total": str(state.purchases_total),
        "revenue_total": repr(round(state.revenue_total, 6)),
        "first_seen": "" if state.first_seen is None else iso_utc(state.first_seen),
        "last_seen": "" if state.last_seen is None else iso_utc(state.last_seen),
    }
