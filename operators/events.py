"""The typed messages that flow between operators: ``Event``, ``Rejected``, ``Change``.

``Event`` is a validated Segment-Spec call; ``Rejected`` is unusable input on its
way to the dead-letter topic; ``Change`` is one membership change on its way to
the ``segment-changes`` topic and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any


class Reason(StrEnum):
    """Machine-readable reasons an input is dead-lettered (the ``reason`` field)."""

    EMPTY = "empty"
    """The message has no value (a tombstone)."""
    OVERSIZED = "oversized"
    """The value is larger than ``max_event_bytes``."""
    NOT_JSON = "not_json"
    """The value is not valid UTF-8 JSON."""
    NOT_OBJECT = "not_object"
    """The JSON is not an object."""
    BAD_TYPE = "bad_type"
    """``type`` is missing (and there is no ``event``) or not a Segment call type."""
    MISSING_EVENT = "missing_event"
    """A ``track`` call without an ``event`` name."""
    MISSING_ID = "missing_id"
    """Neither ``userId`` nor ``anonymousId`` is a non-empty string."""
    MISSING_TIMESTAMP = "missing_timestamp"
    """No ``timestamp``."""
    BAD_TIMESTAMP = "bad_timestamp"
    """``timestamp`` is not an ISO-8601 date-time."""
    WRONG_TYPE = "wrong_type"
    """A known field has the wrong JSON type (e.g. ``properties`` is a list)."""
    SOURCE_ERROR = "source_error"
    """The Kafka consumer reported an error for this message."""
    LATE = "late"
    """Older than its partition's watermark (with ``late_events = "dead_letter"``)."""
    BAD_VALUE = "bad_value"
    """A number outside its bounds (``max_revenue``, ``max_price``, ``max_quantity``)."""
    FUTURE = "future"
    """Stamped more than ``max_future_skew_s`` ahead of the worker's clock."""
    TOO_OLD = "too_old"
    """Stamped before ``min_event_time``."""


@dataclass(frozen=True, slots=True)
class Event:
    """One validated Segment-Spec call.

    Attributes:
        key: identity the state is keyed by: ``user_id`` if known, else ``anonymous_id``.
        user_id: ``userId`` or ``None``.
        anonymous_id: ``anonymousId`` or ``None``.
        message_id: ``messageId``, or ``topic:partition:offset`` when absent.
        type: ``track``, ``page``, ``screen``, ``identify`` or ``alias``.
        name: the ``event`` (track) or ``name`` (page/screen), if any.
        role: the semantic role from the taxonomy, or ``None``.
        timestamp: event time, seconds since the Unix epoch (UTC).
        revenue: ``properties.revenue`` (else ``total``) for any event, 0.0 if absent.
        properties: the ``properties`` object as sent (not copied; never stored in state).
        context: the ``context`` object as sent.
        traits: ``traits`` (identify) or ``context.traits``, as sent.

    """

    key: str
    user_id: str | None
    anonymous_id: str | None
    message_id: str
    type: str
    name: str | None
    role: str | None
    timestamp: float
    revenue: float
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that cannot be used, with everything needed to find and replay it.

    Attributes:
        reason: machine-readable :class:`Reason`.
        detail: one human-readable sentence naming the field at fault.
        raw: the original message value, byte for byte (``None`` for a tombstone).
        key: the original message key.
        topic: source topic.
        partition: source partition.
        offset: source offset.

    """

    reason: Reason
    detail: str
    raw: bytes | None
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One membership change of one user, as published on ``segment-changes``.

    Attributes:
        user_id: the user (the state key).
        kind: ``journey``, ``cluster``, ``rule`` or ``churn``.
        segment: the segment id. Single-valued kinds are qualified by kind
            (``journey:decision``); rule segments are bare names (``loyal``).
        change: ``enter`` or ``exit``.
        previous: for single-valued kinds, the segment left by this change.
        event_time: event time (epoch seconds) of the event or timer that caused it.
        version: per-user, strictly increasing; consumers dedupe on ``(user_id, version)``.
        cause: the ``messageId`` of the causing event, or ``timer:<name>``.
        rule: the transition or rule that decided it (e.g. ``consideration->decision``).
        scores: model scores behind the decision, if a model decided.
        model_version: version of the deciding model, if a model decided.

    """

    user_id: str
    kind: str
    segment: str
    change: str
    previous: str | None
    event_time: float
    version: int
    cause: str
    rule: str | None = None
    scores: dict[str, float] | None = None
    model_version: int | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_UTC = datetime(1, 1, 1, tzinfo=UTC).timestamp()
"""Epoch seconds of 0001-01-01T00:00:00Z, the earliest time ISO-8601 output can spell."""
LATEST_UTC = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 0.999
"""Epoch seconds of 9999-12-31T23:59:59.999Z, the latest time ISO-8601 output can spell."""
_EARLIEST_MS, _LATEST_MS = round(EARLIEST_UTC * 1000), round(LATEST_UTC * 1000)


@lru_cache(maxsize=128)
def iso_utc(epoch_seconds: float) -> str:
    """Format epoch seconds as ISO-8601 UTC, rounded to the nearest millisecond.

    Cached: a batch's changes share their ``emitted_at``, and an event's changes
    their ``event_time``; formatting one costs ten times a cache hit.

    Rounded in integer milliseconds, so reading the text back gives the time to
    the millisecond at any magnitude (far from 1970 a float's microseconds are
    not exact). Saturating: a time before year 1 or after year 9999 (a deadline
    computed from an extreme setting; the parser accepts no such event time) is
    written as the nearest time ISO-8601 can spell, never an exception.

    >>> iso_utc(0.5)
    '1970-01-01T00:00:00.500Z'
    >>> iso_utc(1e300), iso_utc(float("-inf"))
    ('9999-12-31T23:59:59.999Z', '0001-01-01T00:00:00.000Z')
    """
    if not EARLIEST_UTC <= epoch_seconds <= LATEST_UTC:  # NaN too
        epoch_seconds = LATEST_UTC if epoch_seconds > EARLIEST_UTC else EARLIEST_UTC
    ms = min(max(round(epoch_seconds * 1000), _EARLIEST_MS), _LATEST_MS)
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
