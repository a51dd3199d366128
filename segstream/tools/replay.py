"""``segstream replay``: send an event log (JSONL or CSV, gzip ok) to a Kafka topic.

For load testers: any clickstream log becomes Segment-Spec events on a topic
the worker reads, as fast as possible, at a fixed rate (``--rate EPS``) or at
a multiple of the log's own pace (``--speed X``). One event per message; the
message key is the event's ``userId``, else its ``anonymousId``, else none.

Input: the format comes from the suffix (``.csv`` / ``.csv.gz`` is CSV with a
header row, anything else JSONL) unless ``--format`` says otherwise; gzip is
recognised by its magic bytes, whatever the name.

Mapping (``--map FIELD=COLUMN[:TYPE]``, repeatable):

- ``FIELD`` is a dotted Segment path (``userId``, ``event``, ``timestamp``,
  ``context.device.type``, ``properties.revenue``); the dots build nested
  JSON objects. ``COLUMN`` is a CSV column, or a key of a JSONL row (a
  top-level key, else a dotted path into it). A column name containing ``:``
  needs an explicit type: ``x=a:b:str``.
- With at least one ``--map`` the event holds only the mapped fields, in
  ``--map`` order. Without any: a CSV's column names are taken as dotted
  paths, and JSONL lines are sent byte for byte (malformed ones too, so the
  worker dead-letters them; blank lines are skipped).
- ``TYPE`` is one of :data:`TYPES`: ``str`` (non-strings become their JSON
  text), ``int`` (``"3"``, ``"3.0"``), ``float``, ``bool`` (``true/false``,
  ``1/0``, ``yes/no``, ``t/f``, ``y/n``), ``json`` (a string is parsed as
  JSON), ``epoch_s`` and ``epoch_ms`` (to ISO-8601 UTC with milliseconds and
  ``Z``). Without a type a JSONL value is kept as it is, and a CSV cell stays
  a string, except for the numeric Segment fields in :data:`NUMERIC_FIELDS`,
  which become numbers.
- Empty CSV cells, JSON ``null`` and absent keys are left out of the event.
  An event with an ``event`` and no ``type`` gets ``"type": "track"``.
- A row that cannot be mapped (a bad number, a line that is not a JSON object
  while mapping, a CSV row with the wrong number of cells, a CSV line that is
  not UTF-8) is skipped with a warning naming its line and counted as
  ``skipped``; replay never stops on a bad row.

Delivery: at least once; librdkafka's retries may duplicate a message unless
``--producer-option enable.idempotence=true`` is given. The topic must exist:
replay checks it first and never creates topics. The final line on stdout is
``replayed N events (S skipped, E delivery errors) in T s: R events/s``, where
N counts the events handed to the producer and E those of them that were not
delivered (refused by the producer, e.g. too large; failed after its retries;
or still queued when Ctrl-C gave up waiting). The exit code is 0 when every
event was delivered, 1 when some were not or the file broke off, 2 for bad
arguments, a missing topic or unreachable brokers.

>>> maps = [FieldMap.parse(text) for text in ("userId=user_id", "event=action",
...         "timestamp=ts:epoch_ms", "context.device.type=platform", "properties.revenue=amount")]
>>> rows = ["user_id,action,ts,platform,amount",
...         "u1,Order Completed,1714557600250,ios,19.90",
...         "u2,Product Viewed,1714557601000,web,",
...         "u3,Product Viewed,yesterday,web,"]
>>> first, second, third = read_csv(rows, maps)
>>> print(first.value.decode())
{"type":"track","userId":"u1","event":"Order Completed","timestamp":"2024-05-01T10:00:00.250Z",\
"context":{"device":{"type":"ios"}},"properties":{"revenue":19.9}}
>>> first.key, first.event_time
(b'u1', 1714557600.25)
>>> print(second.value.decode())
{"type":"track","userId":"u2","event":"Product Viewed","timestamp":"2024-05-01T10:00:01.000Z",\
"context":{"device":{"type":"web"}}}
>>> third
Skipped(line=4, reason="field 'timestamp' (column 'ts'): not an epoch_ms number: 'yesterday'")

"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from segstream.config import load_config
from segstream.errors import ConfigError, ServiceError
from segstream.kafka import find_topic, produce_waiting
from segstream.operators.parse import parse_timestamp

TYPES: tuple[str, ...] = ("str", "int", "float", "bool", "json", "epoch_s", "epoch_ms")
"""The conversions ``--map FIELD=COLUMN:TYPE`` accepts."""

NUMERIC_FIELDS: frozenset[str] = frozenset(
    {"properties.revenue", "properties.price", "properties.quantity", "properties.total",
     "properties.value"}
)
"""Segment fields whose CSV cells become numbers when no TYPE is given."""

PRODUCER_DEFAULTS: dict[str, str] = {
    "linger.ms": "5",
    # The default is true for producers; a typo in --topic must not make a topic.
    "allow.auto.create.topics": "false",
}
"""librdkafka settings replay starts from; config ``kafka_options`` and ``--producer-option`` win."""

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING = object()


# --- mapping ---------------------------------------------------------------------


class MapError(ValueError):
    """A value that cannot be converted; the row carrying it is skipped."""


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One ``--map FIELD=COLUMN[:TYPE]``.

    Attributes:
        field: dotted Segment path of the output (``context.device.type``).
        column: CSV column or JSONL key (top-level, else dotted) it is read from.
        type: one of :data:`TYPES`, or ``None`` for the default conversion.

    >>> FieldMap.parse("timestamp=ts:epoch_ms")
    FieldMap(field='timestamp', column='ts', type='epoch_ms')
    >>> FieldMap.parse("context.device.type=platform")
    FieldMap(field='context.device.type', column='platform', type=None)

    """

    field: str
    column: str
    type: str | None = None

    @property
    def path(self) -> tuple[str, ...]:
        """The field's path segments: ``("context", "device", "type")``."""
        return tuple(self.field.split("."))

    @classmethod
    def parse(cls, text: str) -> FieldMap:
        """Parse ``FIELD=COLUMN[:TYPE]``.

        Raises:
            ValueError: no ``=``, an empty or malformed field or column, an unknown type.

        """
        name, sep, rest = text.partition("=")
        name = name.strip()
        if not sep or not name or not rest:
            raise ValueError(f"expected FIELD=COLUMN[:TYPE], got {text!r}")
        _check_path(name)
        column, sep, type_ = rest.rpartition(":")
        if not sep:
            column, type_ = rest, ""
        elif type_ not in TYPES:
            raise ValueError(
                f"unknown type {type_!r} in {text!r} (types: {', '.join(TYPES)}; "
                "a column name with ':' needs a type, e.g. x=a:b:str)"
            )
        if not column:
            raise ValueError(f"empty column in {text!r}")
        return cls(name, column, type_ or None)


def _check_path(name: str) -> None:
    if any(not part.strip() for part in name.split(".")):
        raise ValueError(f"{name!r} is not a dotted path (empty segment)")


def check_fields(fields: Sequence[str], *, what: str, source: str) -> None:
    """Check that dotted output paths can all live in one JSON object.

    Two paths clash when they are equal or one is a prefix of the other
    (``context`` and ``context.device``).

    Args:
        fields: the dotted paths.
        what: the setting being checked, for the error (``--map``).
        source: where the paths came from, for the error.

    Raises:
        ConfigError: naming the two clashing paths.

    >>> check_fields(["userId", "context.device.type", "context.ip"], what="--map", source="cli")
    >>> check_fields(["context", "context.ip"], what="--map", source="cli")
    Traceback (most recent call last):
    ...
    segstream.errors.ConfigError: config field '--map' (from cli): fields 'context' and 'context.ip'
    clash: one would overwrite the other

    """
    seen = sorted(fields)
    for before, after in zip(seen, seen[1:], strict=False):
        if after == before or after.startswith(before + "."):
            raise ConfigError(what, source, f"fields {before!r} and {after!r} clash: "
                                            "one would overwrite the other")


def _iso_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _number(value: Any, what: str) -> int | float:
    """Read a JSON number or numeric text: ``int`` for integer text, else ``float``."""
    if isinstance(value, bool):
        raise MapError(f"not {what}: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number: int | float = value
    elif isinstance(value, str):
        try:
            number = int(value) if _INT_TEXT.fullmatch(value) else float(value)
        except ValueError:
            raise MapError(f"not {what}: {value!r}") from None
    else:
        raise MapError(f"not {what}: {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise MapError(f"not {what}: {value!r}")
    return number


def convert(value: Any, type_: str) -> Any:
    """Convert a CSV cell or JSON value to ``type_`` (one of :data:`TYPES`).

    Raises:
        MapError: the value does not convert.

    >>> convert("1714557600", "epoch_s"), convert(1714557600123, "epoch_ms")
    ('2024-05-01T10:00:00.000Z', '2024-05-01T10:00:00.123Z')
    >>> convert("3.0", "int"), convert("yes", "bool"), convert({"a": 1}, "str")
    (3, True, '{"a":1}')
    >>> convert("3.5", "int")
    Traceback (most recent call last):
    ...
    segstream.tools.replay.MapError: not an integer: '3.5'

    """
    if type_ == "str":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if type_ == "int":
        number = _number(value, "an integer")
        if isinstance(number, float):
            if not number.is_integer():
                raise MapError(f"not an integer: {value!r}")
            return int(number)
        return number
    if type_ == "float":
        return float(_number(value, "a number"))
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise MapError(f"not a boolean: {value!r}")
    if type_ == "json":
        if not isinstance(value, str):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise MapError(f"not JSON: {value!r}") from None
    if type_ in ("epoch_s", "epoch_ms"):
        seconds = _number(value, f"an {type_} number")
        try:
            return _iso_ms(round(seconds * 1000) if type_ == "epoch_s" else round(seconds))
        except (OverflowError, ValueError):
            raise MapError(f"{type_} out of range: {value!r}") from None
    raise ValueError(f"unknown type {type_!r} (types: {', '.join(TYPES)})")


def map_row(get: Callable[[str], Any], maps: Sequence[FieldMap], *, cells: bool) -> dict[str, Any]:
    """Build one Segment event from a row.

    Args:
        get: returns a column's value, or any object that is not a str, number,
            bool, list or dict (e.g. ``None``) when the row has none.
        maps: what to read from where; see the module docstring.
        cells: the values are CSV cells: empty ones are left out and the
            :data:`NUMERIC_FIELDS` without a type become numbers.

    Returns:
        The event: ``"type": "track"`` first if it has an ``event`` and no
        ``type``, then the mapped fields in ``maps`` order.

    Raises:
        MapError: a value does not convert; the message names field and column.

    >>> row = {"u": "u1", "n": "Product Added", "qty": "2", "p": "9.5"}
    >>> m = [FieldMap.parse(t) for t in ("userId=u", "event=n", "properties.quantity=qty",
    ...                                  "properties.price=p:str", "properties.sku=sku")]
    >>> map_row(row.get, m, cells=True)
    {'type': 'track', 'userId': 'u1', 'event': 'Product Added', 'properties': {'quantity': 2, 'price': '9.5'}}

    """
    event: dict[str, Any] = {}
    for item in maps:
        value = get(item.column)
        if value is None or value is _MISSING or (cells and value == ""):
            continue
        try:
            if item.type is not None:
                value = convert(value, item.type)
            elif cells and item.field in NUMERIC_FIELDS:
                value = _number(value, "a number")
        except MapError as exc:
            raise MapError(f"field {item.field!r} (column {item.column!r}): {exc}") from None
        node = event
        *parents, last = item.path
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    if "event" in event and "type" not in event:
        event = {"type": "track", **event}
    return event


def event_key(event: Any) -> bytes | None:
    """Return the message key: ``userId``, else ``anonymousId`` (utf-8), else ``None``.

    Integer ids count as their decimal text, as in the worker's parser; empty
    strings and other types count as absent.

    >>> event_key({"userId": "", "anonymousId": "a-1"}), event_key({"userId": 42}), event_key([1])
    (b'a-1', b'42', None)
    """
    if not isinstance(event, dict):
        return None
    for name in ("userId", "anonymousId"):
        value = event.get(name)
        if isinstance(value, str) and value:
            return value.encode()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value).encode()
    return None


def event_time(event: Any) -> float | None:
    """Return the event's ``timestamp`` in epoch seconds, or ``None`` if it has no usable one.

    Usable means an ISO-8601 string, as the worker requires; no offset means UTC.

    >>> event_time({"timestamp": "2024-05-01T10:00:00.500Z"}), event_time({"timestamp": 17})
    (1714557600.5, None)
    """
    if not isinstance(event, dict):
        return None
    stamp = event.get("timestamp")
    return parse_timestamp(stamp) if isinstance(stamp, str) else None


# --- reading ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One message to send.

    Attributes:
        line: 1-based line of the file it came from (for CSV, the row's last line).
        value: the message value (JSON bytes, or the raw line).
        key: the message key (see :func:`event_key`).
        event_time: epoch seconds of its ``timestamp`` (``--speed``), or ``None``.

    """

    line: int
    value: bytes
    key: bytes | None
    event_time: float | None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row that could not be mapped, with its 1-based line and why."""

    line: int
    reason: str


def detect_format(path: str | Path) -> str:
    """Return ``"csv"`` for ``.csv`` / ``.csv.gz`` (any case), else ``"jsonl"``.

    >>> detect_format("clicks.CSV.gz"), detect_format("clicks.jsonl.gz"), detect_format("log.txt")
    ('csv', 'jsonl', 'jsonl')
    """
    name = Path(path).name.lower().removesuffix(".gz")
    return "csv" if name.endswith(".csv") else "jsonl"


def open_log(path: str | Path) -> IO[bytes]:
    """Open a log for binary reading, decompressing it if it starts with the gzip magic bytes.

    Raises:
        ConfigError: the file cannot be opened (field ``FILE``).

    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise ConfigError("FILE", "command line", f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if raw.peek(2)[:2] != _GZIP_MAGIC:
        return raw
    raw.close()
    return gzip.open(path, "rb")  # type: ignore[return-value]


def _lookup(row: dict[str, Any], column: str) -> Any:
    """Return a JSONL row's top-level key ``column``, else its dotted path, else _MISSING."""
    if column in row:
        return row[column]
    node: Any = row
    for part in column.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def read_jsonl(lines: Iterable[bytes], maps: Sequence[FieldMap] = ()) -> Iterator[Record | Skipped]:
    r"""Turn JSONL lines into records.

    Without ``maps`` each non-blank line is sent as it is (a leading UTF-8
    byte-order mark and the line ending removed), even if it is not JSON; its
    key and time are read from it when it parses. With ``maps``, a line that is
    not a JSON object is skipped.

    >>> [r.value for r in read_jsonl([b'{"userId":"u1"}\r\n', b'  \n', b'{oops\n'])]
    [b'{"userId":"u1"}', b'{oops']
    >>> list(read_jsonl([b'[1]\n'], [FieldMap.parse("userId=u")]))
    [Skipped(line=1, reason='not a JSON object')]
    """
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        line = line.rstrip(b"\r\n")
        if not line or line.isspace():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = None
        if not maps:
            yield Record(number, line, event_key(row), event_time(row))
            continue
        if not isinstance(row, dict):
            yield Skipped(number, "not valid JSON" if row is None else "not a JSON object")
            continue
        try:
            event = map_row(lambda column: _lookup(row, column), maps, cells=False)  # noqa: B023
        except MapError as exc:
            yield Skipped(number, str(exc))
            continue
        yield _record(number, event)


def _record(line: int, event: dict[str, Any]) -> Record | Skipped:
    try:
        value = orjson.dumps(event)
    except orjson.JSONEncodeError as exc:  # e.g. an integer wider than 64 bits
        return Skipped(line, f"cannot be written as JSON: {exc}")
    return Record(line, value, event_key(event), event_time(event))


def read_csv(
    lines: Iterable[str], maps: Sequence[FieldMap] = (), *, source: str = "CSV"
) -> Iterator[Record | Skipped]:
    """Turn CSV lines (header first) into records.

    Without ``maps`` every named column is a dotted output path (columns with an
    empty name are ignored). The header is checked when iteration starts.

    Args:
        lines: text lines, header first. (:func:`read_records` passes lines
            decoded from bytes that remember which were not UTF-8, so that
            the rows holding them are skipped.)
        maps: the ``--map`` options.
        source: the file name, for errors.

    Raises:
        ConfigError: a mapped column is not in the header, or column paths clash.

    """
    bad_lines = lines.bad if isinstance(lines, _Utf8Lines) else []
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    if maps:
        missing = sorted({m.column for m in maps} - set(header))
        if missing:
            raise ConfigError("--map", "command line",
                              f"column(s) {', '.join(map(repr, missing))} not in the header of "
                              f"{source} (columns: {', '.join(header)})")
        used = list(maps)
    else:
        used = []
        for name in header:
            if not name:
                continue
            try:
                _check_path(name)
            except ValueError as exc:
                raise ConfigError("FILE header", source, f"column {exc}") from None
            used.append(FieldMap(name, name))
        check_fields([m.field for m in used], what="FILE header", source=source)
    index = {name: i for i, name in reversed(list(enumerate(header)))}
    width = len(header)
    previous_end = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous_end = reader.line_num
            yield Skipped(reader.line_num, f"not valid CSV: {exc}")
            continue
        line, start = reader.line_num, previous_end
        previous_end = line
        if bad_lines and bad_lines[-1] > start:
            yield Skipped(line, "not valid UTF-8")
            continue
        if not cells:
            continue
        if len(cells) != width:
            yield Skipped(line, f"{len(cells)} cells, the header has {width}")
            continue
        try:
            event = map_row(lambda column: cells[index[column]], used, cells=True)  # noqa: B023
        except MapError as exc:
            yield Skipped(line, str(exc))
            continue
        yield _record(line, event)


class _Utf8Lines:
    """Decode binary lines as UTF-8, noting (in ``bad``) the lines that are not."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.bad: list[int] = []

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self._lines, 1):
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.append(number)
                yield line.decode("utf-8", "replace")


def read_records(
    stream: IO[bytes], fmt: str, maps: Sequence[FieldMap] = (), *, source: str = "FILE"
) -> Iterator[Record | Skipped]:
    """Read a binary log (see :func:`open_log`) in format ``"jsonl"`` or ``"csv"``."""
    if fmt == "csv":
        return read_csv(_Utf8Lines(stream), maps, source=source)
    if fmt == "jsonl":
        return read_jsonl(stream, maps)
    raise ValueError(f"unknown format {fmt!r} (formats: jsonl, csv)")


# --- pacing ----------------------------------------------------------------------


class Pacer:
    """Holds each event back until its send time; subclasses say when that is.

    Times are on ``clock`` (monotonic seconds); waiting sleeps in steps of at
    most ``step`` seconds, so a ``sleep`` that also serves the producer (its
    ``poll``) keeps delivery reports flowing. Both are injectable for tests.
    A late event (the producer stalled) goes at once, and the ones after it
    catch up: the schedule is kept over the whole run, not per event.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        step: float = 0.05,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.step = step

    def due(self, event_time: float | None) -> float | None:
        """Return when the next event is due on ``clock`` (``None``: now), advancing the schedule."""
        raise NotImplementedError

    def wait(self, event_time: float | None) -> None:
        """Sleep until the next event (with that event time) is due."""
        due = self.due(event_time)
        if due is None:
            return
        while (left := due - self.clock()) > 0:
            self.sleep(min(left, self.step))


class RatePacer(Pacer):
    """``--rate``: event ``n`` (from 0) is due ``n / rate`` seconds after the first.

    >>> pacer = RatePacer(4.0, clock=lambda: 100.0)
    >>> [pacer.due(None) for _ in range(3)]
    [100.0, 100.25, 100.5]
    """

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not rate > 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate!r}")
        self.rate = rate
        self.sent = 0
        self.start: float | None = None

    def due(self, event_time: float | None) -> float:  # noqa: D102 - see Pacer.due
        if self.start is None:
            self.start = self.clock()
        due = self.start + self.sent / self.rate
        self.sent += 1
        return due


class SpeedPacer(Pacer):
    """``--speed``: gaps between event times shrink by ``speed``, from the first timed event.

    Events without a usable time, and events older than the first timed one
    (out of order), are due at once.

    >>> pacer = SpeedPacer(10.0, clock=lambda: 50.0)
    >>> [pacer.due(t) for t in (1000.0, None, 1020.0, 990.0)]
    [50.0, None, 52.0, 49.0]
    """

    def __init__(self, speed: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = speed
        self.anchor: tuple[float, float] | None = None

    def due(self, event_time: float | None) -> float | None:  # noqa: D102 - see Pacer.due
        if event_time is None:
            return None
        if self.anchor is None:
            self.anchor = (self.clock(), event_time)
        wall, first = self.anchor
        return wall + (event_time - first) / self.speed


# --- producing -------------------------------------------------------------------


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` replay uses."""

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None: ...  # noqa: D102

    def poll(self, timeout: float) -> int: ...  # noqa: D102

    def flush(self, timeout: float = ...) -> int: ...  # noqa: D102


@dataclass(slots=True)
class Summary:
    """Counts of one replay: ``sent`` to the producer, ``skipped`` rows, failed deliveries."""

    sent: int = 0
    skipped: int = 0
    delivery_errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Events sent per second of the run."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """Return the summary line.

        >>> Summary(sent=1000, skipped=2, delivery_errors=0, seconds=0.5).line()
        'replayed 1000 events (2 skipped, 0 delivery errors) in 0.50 s: 2000 events/s'
        """
        return (f"replayed {self.sent} events ({self.skipped} skipped, {self.delivery_errors} "
                f"delivery errors) in {self.seconds:.2f} s: {self.rate:.0f} events/s")


@dataclass(slots=True)
class DeliveryReport:
    """The producer's ``on_delivery`` callback: counts failures and keeps the first few reasons."""

    errors: int = 0
    reasons: list[str] = field(default_factory=list)

    def __call__(self, err: Any, msg: Any) -> None:
        """Record one delivery report (only failures are reported to it)."""
        if err is not None:
            self.errors += 1
            if len(self.reasons) < 3:
                self.reasons.append(str(err))


def produce_all(
    producer: ProducerLike,
    topic: str,
    items: Iterable[Record | Skipped],
    summary: Summary,
    *,
    pacer: Pacer | None = None,
    limit: int | None = None,
    refused: tuple[type[Exception], ...] = (),
    on_skip: Callable[[Skipped], Any] = lambda item: None,
    on_refused: Callable[[Record, Exception], Any] = lambda item, exc: None,
    on_sent: Callable[[], Any] = lambda: None,
) -> None:
    """Send records until ``items`` ends or ``limit`` are sent, counting into ``summary``.

    A full producer queue (``BufferError``) is waited out by polling. A record
    the producer refuses with one of ``refused`` (``KafkaException``, e.g. a
    message over ``message.max.bytes``) counts as sent and as a delivery error.
    Does not flush: the caller does, also when this raises.
    """
    for item in items:
        if limit is not None and summary.sent >= limit:
            break
        if isinstance(item, Skipped):
            summary.skipped += 1
            on_skip(item)
            continue
        if pacer is not None:
            pacer.wait(item.event_time)
        try:
            produce_waiting(producer, topic, item.value, item.key)
        except refused as exc:
            summary.delivery_errors += 1
            on_refused(item, exc)
        summary.sent += 1
        on_sent()
        if summary.sent % 1000 == 0:
            producer.poll(0)


def check_topic(brokers: str, topic: str, options: dict[str, str], *, timeout: float = 10.0) -> None:
    """Fail unless ``topic`` exists on ``brokers`` (never creating it).

    Raises:
        ConfigError: ``options`` holds an unknown librdkafka setting.
        ServiceError: the brokers do not answer, or the topic does not exist.

    """
    from confluent_kafka import KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    try:
        admin = AdminClient({"bootstrap.servers": brokers, **options})
    except KafkaException as exc:
        raise ConfigError("--producer-option", "command line or kafka_options", str(exc)) from exc
    try:
        found = find_topic(admin, topic, timeout=timeout)
    except KafkaException as exc:
        raise ServiceError(f"cannot list topics on Kafka brokers {brokers}: {exc}") from exc
    if found is None:
        raise ServiceError(f"topic {topic!r} does not exist on Kafka brokers {brokers} "
                           "(replay never creates topics: create it first)")
    if found.error is not None:
        raise ServiceError(f"topic {topic!r} on Kafka brokers {brokers} is not usable: {found.error}")


# --- command line ----------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="replay a JSONL or CSV event log into a Kafka topic",
        description=__doc__.split("\n\n>>>")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the log: JSONL or CSV, optionally gzipped")
    parser.add_argument("--topic", required=True, metavar="T", help="topic to send to (must exist)")
    parser.add_argument("--brokers", metavar="B",
                        help="bootstrap servers, comma list (default: the config's brokers)")
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: $SEGSTREAM_CONFIG)")
    parser.add_argument("--format", choices=("jsonl", "csv"),
                        help="input format (default: csv for .csv/.csv.gz, else jsonl)")
    parser.add_argument("--map", dest="maps", action="append", default=[], type=_map_arg,
                        metavar="FIELD=COLUMN[:TYPE]",
                        help=f"build FIELD (dotted Segment path) from COLUMN; TYPE: {', '.join(TYPES)}")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive_float, metavar="EPS", help="send EPS events per second")
    pace.add_argument("--speed", type=_positive_float, metavar="X",
                      help="replay the log's own timing X times faster (1 = real time)")
    parser.add_argument("--limit", type=_count, metavar="N", help="send at most N events")
    parser.add_argument("--producer-option", dest="producer_options", action="append", default=[],
                        type=_option_arg, metavar="KEY=VALUE", help="extra librdkafka producer setting")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=_cmd_replay)


def _map_arg(text: str) -> FieldMap:
    try:
        return FieldMap.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _option_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def _warn(message: str) -> None:
    from tqdm import tqdm  # noqa: PLC0415

    tqdm.write(f"segstream replay: {message}", file=sys.stderr)


def _cmd_replay(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    config = load_config(args.config)
    brokers = args.brokers or ",".join(config.brokers)
    options = {**PRODUCER_DEFAULTS, **dict(config.kafka_options), **dict(args.producer_options)}
    maps: list[FieldMap] = args.maps
    check_fields([m.field for m in maps], what="--map", source="command line")
    fmt = args.format or detect_format(args.file)

    with open_log(args.file) as stream:
        items = read_records(stream, fmt, maps, source=args.file)
        try:
            first = next(items, None)  # header and file problems surface before Kafka
        except (OSError, EOFError) as exc:
            raise ConfigError("FILE", "command line", f"cannot read {args.file!r}: {exc}") from exc
        check_topic(brokers, args.topic, options)
        report = DeliveryReport()
        try:
            producer = Producer({"bootstrap.servers": brokers, **options, "on_delivery": report,
                                 "delivery.report.only.error": True})
        except KafkaException as exc:
            raise ConfigError("--producer-option", "command line or kafka_options", str(exc)) from exc

        def sleep(seconds: float) -> None:
            # poll() serves delivery reports while waiting, but counts whole milliseconds:
            # below one it would return at once and spin.
            if seconds >= 0.001:
                producer.poll(seconds)
            else:
                time.sleep(seconds)

        pacer: Pacer | None = None
        if args.rate is not None:
            pacer = RatePacer(args.rate, sleep=sleep)
        elif args.speed is not None:
            pacer = SpeedPacer(args.speed, sleep=sleep)
        summary = Summary()
        failure: str | None = None
        interrupted = False
        show = not args.no_progress and sys.stderr.isatty()
        start = time.perf_counter()
        with tqdm(total=args.limit, unit="ev", unit_scale=True, file=sys.stderr, disable=not show,
                  desc=f"-> {args.topic}") as bar:
            try:
                produce_all(
                    producer, args.topic, chain([] if first is None else [first], items), summary,
                    pacer=pacer, limit=args.limit, refused=(KafkaException,),
                    on_skip=lambda s: _warn(f"{args.file} line {s.line}: skipped: {s.reason}"),
                    on_refused=lambda r, exc: _warn(f"{args.file} line {r.line}: refused: {exc}"),
                    on_sent=lambda: bar.update(1),
                )
            except (OSError, EOFError) as exc:  # e.g. a truncated gzip: keep what was sent
                failure = f"{args.file}: stopped reading after {summary.sent} events: {exc}"
            except KeyboardInterrupt:
                interrupted = True
        # Blocks until every queued message is delivered or has failed (message.timeout.ms);
        # after Ctrl-C, gives up after a few seconds and counts the rest as not delivered.
        undelivered = producer.flush(5.0) if interrupted else producer.flush()
        summary.delivery_errors += report.errors + undelivered
        summary.seconds = time.perf_counter() - start
    print(summary.line(), flush=True)
    if report.errors or undelivered:
        reasons = "; ".join(report.reasons) or "still queued when replay stopped"
        _warn(f"{report.errors + undelivered} events were not delivered to {args.topic!r} on "
              f"{brokers}: {reasons}")
    if interrupted:
        raise KeyboardInterrupt
    if failure is not None:
        _warn(failure)
        return 1
    # A load test whose events did not all arrive must not look like a success.
    return 1 if summary.delivery_errors else 0
