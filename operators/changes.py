"""Serialize outputs for Kafka: changes for ``segment-changes``, rejects for the dead-letter topic.

The last step before the Kafka sink. ``change_value`` builds the JSON value of
one change (the contract in ``segstream/schemas/segment-change.schema.json``);
``dead_letter`` keeps the original bytes as the value and puts the reason and
source coordinates in headers, so a dead-lettered message can be re-driven
as is once fixed.

>>> from segstream.operators.events import Change
>>> change = Change("u1", "journey", "journey:decision", "enter", "journey:awareness",
...                 event_time=0.0, version=3, cause="m1", rule="awareness->decision")
>>> change_value(change, emitted_at=1.0)[:60]
b'{"user_id":"u1","kind":"journey","segment":"journey:decision'
"""

from __future__ import annotations

import orjson
from segstream.operators.events import Change, Rejected, iso_utc
from segstream.operators.models import ModelEvent

REASON_HEADER = "segstream.reason"
DETAIL_HEADER = "segstream.detail"
SOURCE_HEADER = "segstream.source"
VALUE_BYTES_HEADER = "segstream.value_bytes"
"""On a dead letter whose value was cut to fit: the original value's length in bytes."""
KEY_BYTES_HEADER = "segstream.key_bytes"
"""On a dead letter whose key was cut to fit: the original key's length in bytes."""
MAX_DETAIL_CHARS = 1000
"""A detail quotes what it found (``userId must be a string, got [...]``): at most this much."""


def change_value(change: Change, *, emitted_at: float) -> bytes:
    """Return the JSON value of one change (``emitted_at`` is wall-clock epoch seconds)."""
    return orjson.dumps(
        {
            "user_id": change.user_id,
            "kind": change.kind,
            "segment": change.segment,
            "change": change.change,
            "previous": change.previous,
            "event_time": iso_utc(change.event_time),
            "emitted_at": iso_utc(emitted_at),
            "version": change.version,
            "cause": change.cause,
            "rule": change.rule,
            "scores": change.scores,
            "model_version": change.model_version,
        }
    )


def model_event_value(event: ModelEvent, *, emitted_at: float) -> bytes:
    """Return the JSON value of one message on the ``model-events`` topic.

    >>> model_event_value(ModelEvent("drift", 3, 0.0, {"detector": "churn_error"}), emitted_at=1.0)
    b'{"kind":"drift","model_version":3,"event_time":"1970-01-01T00:00:00.000Z","emitted_at":"1970-01-01T00:00:01.000Z","detail":{"detector":"churn_error"}}'
    """
    return orjson.dumps({
        "kind": event.kind,
        "model_version": event.model_version,
        "event_time": iso_utc(event.event_time),
        "emitted_at": iso_utc(emitted_at),
        "detail": event.detail,
    })


def change_key(change: Change) -> bytes:
    """Kafka key of a change: the user id, so a user's changes stay in order."""
    return change.user_id.encode()


def dead_letter_headers(rejected: Rejected) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: reason code, detail, and ``topic/partition/offset``.

    >>> from segstream.operators.events import Reason
    >>> dict(dead_letter_headers(Rejected(Reason.NOT_JSON, "bad", b"{", None, "t", 0, 7)))
    {'segstream.reason': b'not_json', 'segstream.detail': b'bad', 'segstream.source': b't/0/7'}
    """
    source = f"{rejected.topic}/{rejected.partition}/{rejected.offset}"
    detail = rejected.detail
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "..."
    return [
        (REASON_HEADER, rejected.reason.value.encode()),
        (DETAIL_HEADER, detail.encode("utf-8", "replace")),
        (SOURCE_HEADER, source.encode()),
    ]


def dead_letter_parts(rejected: Rejected, *, max_bytes: int
                      ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Return a dead letter's key, value and headers, cut to at most ``max_bytes`` together.

    The original bytes are kept as they are when they fit, which is the rule
    (events over ``max_event_bytes`` are rejected long before this limit). A
    message that does not fit, which no producer would accept, keeps its first
    bytes: the key its first quarter of the budget at most, the value the rest,
    with headers giving the original lengths. The whole message stays at its
    ``segstream.source`` coordinates in the input topic.

    >>> from segstream.operators.events import Reason
    >>> key, value, headers = dead_letter_parts(
    ...     Rejected(Reason.OVERSIZED, "big", b"x" * 5000, b"k", "t", 0, 7), max_bytes=1024)
    >>> len(value), dict(headers)["segstream.value_bytes"]
    (1023, b'5000')
    """
    key, value = rejected.key, rejected.raw
    headers = dead_letter_headers(rejected)
    key_size, value_size = len(key or b""), len(value or b"")
    if key_size + value_size <= max_bytes:
        return key, value, headers
    if key is not None and key_size > max_bytes // 4:
        key = key[:max_bytes // 4]
        headers.append((KEY_BYTES_HEADER, str(key_size).encode()))
    if value is not None and len(key or b"") + value_size > max_bytes:
        value = value[:max_bytes - len(key or b"")]
        headers.append((VALUE_BYTES_HEADER, str(value_size).encode()))
    return key, value, headers
