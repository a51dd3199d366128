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

Values a producer can get wrong have defined outcomes (``docs/reliability.md``):

- ``properties.revenue`` / ``total`` / ``price`` / ``quantity``, and each
  ``properties.products[].price`` / ``quantity``, are numbers whose magnitude is
  at most their bound (``max_revenue``, ``max_price``, ``max_quantity``), else
  the event is dead-lettered as ``bad_value`` (a string is ``wrong_type``).
  JSON has no NaN or infinity, and a number too large for a double is not
  JSON here (``not_json``), so every accepted amount is finite and bounded:
  no sum over the population can overflow.
- ``timestamp`` is within years 1-9999 in UTC (else ``bad_timestamp``), not
  before ``min_event_time`` (``too_old``: a device clock reset to 1970) and
  not more than ``max_future_skew_s`` ahead of the worker's clock
  (``future``). A rejected event never moves a watermark.

>>> parser = EventParser()
>>> event = parser.parse(b'{"type":"track","event":"Order Completed","userId":"u1",'
...                      b'"timestamp":"2024-05-01T10:00:00Z","properties":{"revenue":20}}')
>>> (event.key, event.role, event.revenue, event.timestamp)
('u1', 'purchase', 20.0, 1714557600.0)
>>> parser.parse(b'{"type":"track","event":"x","timestamp":"2024-05-01T10:00:00Z"}').reason
<Reason.MISSING_ID: 'missing_id'>
>>> parser.parse(b'{"event":"x","userId":"u1","timestamp":"9999-12-31T23:59:59Z"}').reason
<Reason.FUTURE: 'future'>
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from segstream.operators.events import EARLIEST_UTC, LATEST_UTC, Event, Reason, Rejected, iso_utc
from segstream.operators.taxonomy import DEFAULT_TAXONOMY, Taxonomy

CALL_TYPES = frozenset({"track", "page", "screen", "identify", "alias"})
_EMPTY: dict[str, Any] = {}

DEFAULT_MAX_REVENUE = 1e9
"""Largest magnitude of ``revenue`` / ``total`` (config ``max_revenue``): a billion in any
currency unit, which admits real orders in currencies of small units (IDR, KRW)."""
DEFAULT_MAX_PRICE = 1e9
"""Largest magnitude of a ``price`` (config ``max_price``)."""
DEFAULT_MAX_QUANTITY = 1e6
"""Largest magnitude of a ``quantity`` (config ``max_quantity``)."""
DEFAULT_MAX_FUTURE_SKEW_S = 3600.0
"""How far ahead of the worker's clock an event may be stamped (config ``max_future_skew_s``)."""
DEFAULT_MIN_EVENT_TIME = "2000-01-01T00:00:00Z"
"""The earliest event time accepted (config ``min_event_time``)."""
MAX_PRODUCTS_CHECKED = 1000
"""``properties.products`` entries whose price and quantity are checked (a 32 KiB event
holds fewer)."""


def parse_timestamp(text: str) -> float | None:
    """Read an ISO-8601 date-time as epoch seconds; no offset means UTC; ``None`` if unusable.

    Unusable also means outside years 1-9999 once in UTC (``9999-12-31T23:59:59-01:00``),
    which no ISO-8601 output could spell.

    >>> parse_timestamp("2024-05-01T12:00:00+02:00"), parse_timestamp("2024-05-01T10:00:00")
    (1714557600.0, 1714557600.0)
    >>> parse_timestamp("yesterday") is None, parse_timestamp("0001-01-01T00:00:00+01:00") is None
    (True, True)
    """
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        epoch = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return epoch if EARLIEST_UTC <= epoch <= LATEST_UTC else None


DEFAULT_MIN_EVENT_TIME_S: float = parse_timestamp(DEFAULT_MIN_EVENT_TIME)  # type: ignore[assignment]
""":data:`DEFAULT_MIN_EVENT_TIME` in epoch seconds."""


def _bounded(value: Any, name: str, bound: float) -> tuple[Reason, str] | None:
    """Check one amount: ``None`` if fine, else the reason and a detail naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Reason.WRONG_TYPE, f"{name} must be a number, got {value!r}"
    if not -bound <= value <= bound:  # NaN too, should a caller build one
        return Reason.BAD_VALUE, f"{name} is {value!r}, beyond its bound of +-{bound:g}"
    return None


@dataclass(frozen=True, slots=True)
class EventParser:
    """Validates Segment-Spec JSON against a taxonomy and a size limit.

    Args:
        taxonomy: maps event names to roles.
        max_event_bytes: larger values are rejected as ``oversized``.
        max_revenue: largest magnitude of ``revenue`` / ``total``; beyond, ``bad_value``.
        max_price: largest magnitude of a ``price``; beyond, ``bad_value``.
        max_quantity: largest magnitude of a ``quantity``; beyond, ``bad_value``.
        max_future_skew_s: how far ahead of ``clock()`` a timestamp may be; beyond, ``future``.
        min_event_time: the earliest timestamp accepted (epoch seconds); before, ``too_old``.
        clock: the wall clock (epoch seconds) future timestamps are judged by.

    """

    taxonomy: Taxonomy = DEFAULT_TAXONOMY
    max_event_bytes: int = 32768
    max_revenue: float = DEFAULT_MAX_REVENUE
    max_price: float = DEFAULT_MAX_PRICE
    max_quantity: float = DEFAULT_MAX_QUANTITY
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S
    min_event_time: float = DEFAULT_MIN_EVENT_TIME_S
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def parse(
        self,
        raw: bytes | None,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        now: float | None = None,
    ) -> Event | Rejected:
        """Parse one message value; never raises on any input.

        ``now``: the wall clock future timestamps are judged by (default ``clock()``);
        the parse step reads the clock once per batch and passes it.
        """

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
            return reject(Reason.BAD_TIMESTAMP, f"timestamp is not an ISO-8601 date-time "
                          f"within years 1-9999 UTC: {stamp!r}")
        if timestamp < self.min_event_time:
            return reject(Reason.TOO_OLD, f"timestamp {stamp!r} is before min_event_time "
                          f"{iso_utc(self.min_event_time)}")
        if now is None:
            now = self.clock()
        if timestamp > now + self.max_future_skew_s:
            return reject(Reason.FUTURE, f"timestamp {stamp!r} is more than "
                          f"max_future_skew_s ({self.max_future_skew_s:g} s) ahead of the "
                          f"worker's clock ({iso_utc(now)})")

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

        revenue_name = "revenue"
        revenue = properties.get("revenue")
        if revenue is None:
            revenue_name, revenue = "total", properties.get("total")
        if revenue is None:
            revenue = 0.0
        elif (wrong := _bounded(revenue, f"properties.{revenue_name}", self.max_revenue)):
            return reject(*wrong)
        if ("price" in properties or "quantity" in properties or "products" in properties) and (
                wrong := self._check_amounts(properties)):
            return reject(*wrong)
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

    def _check_amounts(self, properties: dict[str, Any]) -> tuple[Reason, str] | None:
        """Check ``price`` and ``quantity``, at the top and in each of ``products``."""
        holders: list[tuple[str, Any]] = [("properties", properties)]
        products = properties.get("products")
        if isinstance(products, list):
            holders.extend((f"properties.products[{i}]", product)
                           for i, product in enumerate(products[:MAX_PRODUCTS_CHECKED]))
        for where, holder in holders:
            if not isinstance(holder, dict):
                continue
            for name, bound in (("price", self.max_price), ("quantity", self.max_quantity)):
                value = holder.get(name)
                if value is not None and (wrong := _bounded(value, f"{where}.{name}", bound)):
                    return wrong
        return None
