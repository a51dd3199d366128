"""Parse and validate raw clickstream messages: bytes in, ``Event`` or ``Rejected`` out.

First step of the flow. Input is a message value (bytes) with its Kafka
coordinates; output is an :class:`~segstream.operators.events.Event` or a
:class:`~segstream.operators.events.Rejected` carrying the original bytes and a
machine-readable reason, bound for the dead-letter topic. The parser never
raises on input, whatever the bytes (a property test holds it to that).

Accepted shape (the Segment Spec): ``type`` in ``track``/``page``/``screen``/
``identify``/``alias`` (a missing ``type`` with an ``event`` means ``track``);
``userId`` and/or ``anonymousId`` (strings; integer ids are read as their
decimal string); ``timestamp`` an ISO-8601 date-time (no offset means UTC);
``properties``, ``context``, ``traits`` objects. Unknown fields are ignored.

>>> parser = EventParser()
>>> event = parser.parse(b'{"type":"track","event":"Order Completed","userId":"u1",'
...                      b'"timestamp":"2024-05-01T10:00:00Z","properties":{"revenue":20}}')
>>> (event.key, event.role, event.revenue, event.timestamp)
('u1', 'purchase', 20.0, 1714557600.0)
>>> parser.parse(b'{"type":"track","event":"x","timestamp":"2024-05-01T10:00:00Z"}').reason
<Reason.MISSING_ID: 'missing_id'>
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from segstream.operators.events import Event, Reason, Rejected
from segstream.operators.taxonomy import DEFAULT_TAXONOMY, Taxonomy

CALL_TYPES = frozenset({"track", "page", "screen", "identify", "alias"})
_EMPTY: dict[str, Any] = {}


def parse_timestamp(text: str) -> float | None:
    """Read an ISO-8601 date-time as epoch seconds; no offset means UTC; ``None`` if unusable.

    >>> parse_timestamp("2024-05-01T12:00:00+02:00"), parse_timestamp("2024-05-01T10:00:00")
    (1714557600.0, 1714557600.0)
    >>> parse_timestamp("yesterday") is None
    True
    """
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class EventParser:
    """Validates Segment-Spec JSON against a taxonomy and a size limit.

    Args:
        taxonomy: maps event names to roles.
        max_event_bytes: larger values are rejected as ``oversized``.

    """

    taxonomy: Taxonomy = DEFAULT_TAXONOMY
    max_event_bytes: int = 32768

    def parse(
        self,
        raw: bytes | None,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Event | Rejected:
        """Parse one message value; never raises on any input."""

        def reject(reason: Reason, detail: str) -> Rejected:
            return Rejected(reason, detail, raw, key, topic, partition, offset)

        if raw is None or len(raw) == 0:
            return reject(Reason.EMPTY, "message has no value")
        if len(raw) > self.max_event_bytes:
            return reject(
                Reason.OVERSIZED,
                f"value is {len(raw)} bytes, limit is {self.max_event_bytes} (max_event_bytes)",
            )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return reject(Reason.NOT_JSON, f"not valid JSON: {exc}")
        if not isinstance(doc, dict):
            return reject(Reason.NOT_OBJECT, f"expected a JSON object, got {type(doc).__name__}")

        name = doc.get("event")
        call_type = doc.get("type")
        if call_type is None and name is not None:
            call_type = "track"
        if not isinstance(call_type, str) or call_type not in CALL_TYPES:
            return reject(
                Reason.BAD_TYPE,
                f"type must be one of {sorted(CALL_TYPES)}, got {call_type!r}",
            )
        if call_type in ("page", "screen"):
            name = doc.get("name", name)
        if name is not None and not isinstance(name, str):
            return reject(Reason.WRONG_TYPE, f"event name must be a string, got {name!r}")
        if call_type == "track" and not name:
            return reject(Reason.MISSING_EVENT, "a track call needs a non-empty 'event'")

        user_id = doc.get("userId")
        anonymous_id = doc.get("anonymousId")
        for field_name, value in (("userId", user_id), ("anonymousId", anonymous_id)):
            if value is not None and not isinstance(value, str):
                if isinstance(value, int) and not isinstance(value, bool):
                    continue
                return reject(
                    Reason.WRONG_TYPE, f"{field_name} must be a string, got {value!r}"
                )
        user_id = None if user_id is None or user_id == "" else str(user_id)
        anonymous_id = None if anonymous_id is None or anonymous_id == "" else str(anonymous_id)
        identity = user_id or anonymous_id
        if identity is None:
            return reject(Reason.MISSING_ID, "neither userId nor anonymousId is set")

        stamp = doc.get("timestamp")
        if stamp is None:
            return reject(Reason.MISSING_TIMESTAMP, "no timestamp")
        if not isinstance(stamp, str):
            return reject(Reason.BAD_TIMESTAMP, f"timestamp must be an ISO-8601 string, got {stamp!r}")
        timestamp = parse_timestamp(stamp)
        if timestamp is None:
            return reject(Reason.BAD_TIMESTAMP, f"timestamp is not an ISO-8601 date-time: {stamp!r}")

        objects = []
        for field_name in ("properties", "context", "traits"):
            value = doc.get(field_name)
            if value is None:
                value = _EMPTY
            elif not isinstance(value, dict):
                return reject(
                    Reason.WRONG_TYPE,
                    f"{field_name} must be an object, got {type(value).__name__}",
                )
            objects.append(value)
        properties, context, traits = objects
        if not traits:
            context_traits = context.get("traits")
            if isinstance(context_traits, dict):
                traits = context_traits

        revenue = properties.get("revenue")
        if revenue is None:
            revenue = properties.get("total", 0.0)
        if revenue is None:
            revenue = 0.0
        if isinstance(revenue, bool) or not isinstance(revenue, int | float):
            return reject(
                Reason.WRONG_TYPE, f"properties.revenue must be a number, got {revenue!r}"
            )
        message_id = doc.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            # Deterministic either way, so a replay names the same cause.
            if topic is not None:
                message_id = f"{topic}:{partition}:{offset}"
            else:
                message_id = "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()

        return Event(
            key=identity,
            user_id=user_id,
            anonymous_id=anonymous_id,
            message_id=message_id,
            type=call_type,
            name=name,
            role=self.taxonomy.role_of(call_type, name),
            timestamp=timestamp,
            revenue=float(revenue),
            properties=properties,
            context=context,
            traits=traits,
        )
