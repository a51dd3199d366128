"""``segstream replay``: mapping, reading, pacing, and replays into a real broker."""

from __future__ import annotations

import argparse
import gzip
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream.errors import ConfigError
from segstream.tools.replay import (
    NUMERIC_FIELDS,
    DeliveryReport,
    FieldMap,
    MapError,
    RatePacer,
    Record,
    Skipped,
    SpeedPacer,
    Summary,
    check_fields,
    convert,
    detect_format,
    event_key,
    event_time,
    map_row,
    open_log,
    produce_all,
    read_csv,
    read_jsonl,
    read_records,
    register,
)

SUMMARY = re.compile(
    r"^replayed (\d+) events \((\d+) skipped, (\d+) delivery errors\) in ([\d.]+) s: (\d+) events/s$"
)


def maps(*texts: str) -> list[FieldMap]:
    return [FieldMap.parse(text) for text in texts]


def values(items: list[Record | Skipped]) -> list[Any]:
    return [orjson.loads(item.value) if isinstance(item, Record) else item for item in items]


def own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segstream")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


class FakeClock:
    """A clock that only moves when slept on; records every sleep."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeProducer:
    """Records produce calls; refuses the first ``full`` of them with BufferError."""

    def __init__(self, full: int = 0) -> None:
        self.full = full
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.polls: list[float] = []

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("queue full")
        self.sent.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, *args: float) -> int:
        return 0


# --- --map parsing ------------------------------------------------------------------


class TestFieldMap:
    def test_parses_field_column_and_type(self) -> None:
        """FIELD=COLUMN:TYPE splits into a dotted path, a column and a known type."""
        item = FieldMap.parse("context.device.type=platform:str")
        assert (item.field, item.column, item.type) == ("context.device.type", "platform", "str")
        assert item.path == ("context", "device", "type")

    def test_type_is_optional(self) -> None:
        """Without :TYPE the type is None (the default conversion)."""
        assert FieldMap.parse("userId=user_id") == FieldMap("userId", "user_id", None)

    def test_column_with_colon_needs_a_type(self) -> None:
        """A column containing ':' is read whole when a type follows, refused otherwise."""
        assert FieldMap.parse("event=ns:name:str") == FieldMap("event", "ns:name", "str")
        with pytest.raises(ValueError, match="unknown type 'name'"):
            FieldMap.parse("event=ns:name")

    @pytest.mark.parametrize("text", ["userId", "=col", "userId=", "a..b=col", ".a=col",
                                      "userId=:int", "userId=col:integer"])
    def test_malformed_maps_are_refused(self, text: str) -> None:
        """A map without '=', with an empty field, segment or column, or an unknown type is refused."""
        with pytest.raises(ValueError):
            FieldMap.parse(text)

    def test_bad_map_is_a_usage_error(self) -> None:
        """A malformed --map is rejected by the argument parser."""
        with pytest.raises(SystemExit):
            own_parser().parse_args(["replay", "f.csv", "--topic", "t", "--map", "userId"])

    def test_clashing_fields_are_refused(self) -> None:
        """A field that is a prefix of another, or repeated, cannot be built and is a ConfigError."""
        check_fields(["context.ip", "context.device.type", "userId"], what="--map", source="cli")
        with pytest.raises(ConfigError, match="'context' and 'context.ip'"):
            check_fields(["context.ip", "context"], what="--map", source="cli")
        with pytest.raises(ConfigError, match="'userId' and 'userId'"):
            check_fields(["userId", "userId"], what="--map", source="cli")


# --- type conversion ------------------------------------------------------------------


class TestConvert:
    @pytest.mark.parametrize(("value", "type_", "expected"), [
        ("abc", "str", "abc"),
        (12, "str", "12"),
        (True, "str", "true"),
        ({"a": [1]}, "str", '{"a":[1]}'),
        (" 42 ", "int", 42),
        ("-3.0", "int", -3),
        (7.0, "int", 7),
        ("19.90", "float", 19.9),
        (3, "float", 3.0),
        ("TRUE", "bool", True),
        ("no", "bool", False),
        ("1", "bool", True),
        (0, "bool", False),
        ('{"plan": "pro"}', "json", {"plan": "pro"}),
        ([1, 2], "json", [1, 2]),
    ])
    def test_converts(self, value: Any, type_: str, expected: Any) -> None:
        """Each TYPE turns strings and JSON values into the expected JSON value."""
        result = convert(value, type_)
        assert result == expected
        assert type(result) is type(expected)

    @pytest.mark.parametrize(("value", "type_", "expected"), [
        ("1714557600", "epoch_s", "2024-05-01T10:00:00.000Z"),
        (1714557600.123, "epoch_s", "2024-05-01T10:00:00.123Z"),
        ("1714557600.0005", "epoch_s", "2024-05-01T10:00:00.000Z"),
        (1714557600123, "epoch_ms", "2024-05-01T10:00:00.123Z"),
        ("1714557600999", "epoch_ms", "2024-05-01T10:00:00.999Z"),
        (0, "epoch_ms", "1970-01-01T00:00:00.000Z"),
        (-1000, "epoch_ms", "1969-12-31T23:59:59.000Z"),
    ])
    def test_epochs_become_iso_utc_with_ms(self, value: Any, type_: str, expected: str) -> None:
        """epoch_s and epoch_ms become ISO-8601 UTC strings with milliseconds and Z, exact to the ms."""
        assert convert(value, type_) == expected

    @pytest.mark.parametrize(("value", "type_"), [
        ("abc", "int"), ("3.5", "int"), (True, "int"), ("", "float"), ("nan", "float"),
        ("inf", "float"), ("maybe", "bool"), (2, "bool"), ("{oops", "json"),
        ("yesterday", "epoch_s"), (10**20, "epoch_ms"), ([1], "float"),
    ])
    def test_bad_values_raise_map_error(self, value: Any, type_: str) -> None:
        """A value that does not convert raises MapError, which the readers turn into a skip."""
        with pytest.raises(MapError):
            convert(value, type_)


# --- mapping rows --------------------------------------------------------------------


class TestMapRow:
    def test_dotted_paths_build_nested_objects_in_map_order(self) -> None:
        """Dotted fields nest, siblings share their parent, and the maps' order is kept."""
        row = {"u": "u1", "d": "ios", "c": "DE", "ip": "10.0.0.1"}
        event = map_row(row.get, maps("userId=u", "context.device.type=d",
                                      "context.location.country=c", "context.ip=ip"), cells=True)
        assert event == {"userId": "u1", "context": {"device": {"type": "ios"},
                                                     "location": {"country": "DE"}, "ip": "10.0.0.1"}}
        assert list(event) == ["userId", "context"]
        assert list(event["context"]) == ["device", "location", "ip"]

    def test_event_without_type_becomes_track(self) -> None:
        """A row with an event and no type gets type track, first."""
        event = map_row({"e": "Signed Up", "u": "u1"}.get, maps("userId=u", "event=e"), cells=True)
        assert list(event.items()) == [("type", "track"), ("userId", "u1"), ("event", "Signed Up")]

    def test_mapped_type_is_kept_and_no_event_means_no_default(self) -> None:
        """An explicit type is not overwritten, and a row without an event gets no type."""
        assert map_row({"t": "screen", "e": "Home"}.get, maps("type=t", "event=e"), cells=True) == {
            "type": "screen", "event": "Home"}
        assert map_row({"u": "u1"}.get, maps("userId=u"), cells=True) == {"userId": "u1"}

    def test_csv_numeric_fields_become_numbers(self) -> None:
        """Without a TYPE the known numeric Segment fields of a CSV become int or float."""
        row = {name: text for name, text in zip(sorted(NUMERIC_FIELDS), ["3", "9.99", "-2", "1e3", "0.5"],
                                                strict=True)}
        event = map_row(row.get, [FieldMap(name, name) for name in sorted(NUMERIC_FIELDS)], cells=True)
        assert event["properties"] == {"price": 3, "quantity": 9.99, "revenue": -2, "total": 1000.0,
                                       "value": 0.5}
        assert isinstance(event["properties"]["price"], int)

    def test_other_csv_fields_stay_strings(self) -> None:
        """Cells of other fields stay strings, even when they look like numbers."""
        event = map_row({"u": "007", "p": "12"}.get, maps("userId=u", "properties.product_id=p"),
                        cells=True)
        assert event == {"userId": "007", "properties": {"product_id": "12"}}

    def test_type_overrides_numeric_coercion(self) -> None:
        """An explicit :str keeps a numeric field's text."""
        event = map_row({"r": "19.90"}.get, maps("properties.revenue=r:str"), cells=True)
        assert event == {"properties": {"revenue": "19.90"}}

    def test_empty_cells_and_nulls_are_left_out(self) -> None:
        """Empty CSV cells, JSON nulls and absent keys leave their field out."""
        assert map_row({"u": "", "r": ""}.get, maps("userId=u", "properties.revenue=r:float"),
                       cells=True) == {}
        assert map_row({"u": None}.get, maps("userId=u", "anonymousId=a"), cells=False) == {}

    def test_bad_value_names_field_and_column(self) -> None:
        """A value that does not convert raises MapError naming the field and the column."""
        with pytest.raises(MapError, match=r"field 'properties.revenue' \(column 'amount'\): not a number"):
            map_row({"amount": "n/a"}.get, maps("properties.revenue=amount"), cells=True)

    def test_keys_and_times(self) -> None:
        """The key is userId, else anonymousId; the time is the ISO timestamp in epoch seconds."""
        assert event_key({"userId": "u1", "anonymousId": "a1"}) == b"u1"
        assert event_key({"userId": None, "anonymousId": "a1"}) == b"a1"
        assert event_key({"userId": "é"}) == "é".encode()
        assert event_key({"userId": True}) is None
        assert event_key("not an object") is None
        assert event_time({"timestamp": "2024-05-01T10:00:00"}) == 1714557600.0
        assert event_time({"timestamp": "2024-05-01T12:00:00+02:00"}) == 1714557600.0
        assert event_time({"timestamp": "soon"}) is None
        assert event_time({}) is None


# --- reading files -------------------------------------------------------------------


class TestReadCsv:
    def test_without_maps_columns_are_dotted_paths(self) -> None:
        """Without --map every named column is a dotted path; numbers and empty cells as documented."""
        lines = ["userId,event,timestamp,properties.revenue,context.device.type,",
                 "u1,Order Completed,2024-05-01T10:00:00Z,20,ios,junk",
                 "u2,Product Viewed,2024-05-01T10:00:01Z,,web,"]
        first, second = read_csv(lines)
        assert values([first, second]) == [
            {"type": "track", "userId": "u1", "event": "Order Completed",
             "timestamp": "2024-05-01T10:00:00Z", "properties": {"revenue": 20},
             "context": {"device": {"type": "ios"}}},
            {"type": "track", "userId": "u2", "event": "Product Viewed",
             "timestamp": "2024-05-01T10:00:01Z", "context": {"device": {"type": "web"}}},
        ]
        assert isinstance(first, Record) and first.key == b"u1" and first.event_time == 1714557600.0

    def test_with_maps_only_mapped_fields_are_sent(self) -> None:
        """With --map the event holds only the mapped fields, keyed by the mapped anonymousId."""
        lines = ["anon,action,ts,extra", "a-9,Cart Viewed,1714557600,x"]
        [record] = read_csv(lines, maps("anonymousId=anon", "event=action", "timestamp=ts:epoch_s"))
        assert isinstance(record, Record)
        assert orjson.loads(record.value) == {"type": "track", "anonymousId": "a-9",
                                              "event": "Cart Viewed", "timestamp": "2024-05-01T10:00:00.000Z"}
        assert (record.key, record.event_time, record.line) == (b"a-9", 1714557600.0, 2)

    def test_bad_rows_are_skipped_with_their_line(self) -> None:
        """A bad value or a wrong cell count skips that row only, naming its line and the problem."""
        lines = ["u,q", "u1,1", "u2,lots", "u3", "u4,1,2", "u5,2"]
        items = list(read_csv(lines, maps("userId=u", "properties.quantity=q:int")))
        assert [type(item).__name__ for item in items] == ["Record", "Skipped", "Skipped", "Skipped",
                                                           "Record"]
        assert items[1] == Skipped(3, "field 'properties.quantity' (column 'q'): not an integer: 'lots'")
        assert items[2] == Skipped(4, "1 cells, the header has 2")
        assert items[3] == Skipped(5, "3 cells, the header has 2")
        assert values([items[4]]) == [{"userId": "u5", "properties": {"quantity": 2}}]

    def test_quoted_newlines_and_blank_lines(self) -> None:
        """Quoted cells may hold commas and newlines; blank lines are ignored; lines stay counted."""
        lines = ["u,name\n", '"u1","a, b\n', 'c"\n', "\n", "u2,d\n", "u3,oops,x\n"]
        items = list(read_csv(lines, maps("userId=u", "properties.name=name")))
        assert values(items[:2]) == [{"userId": "u1", "properties": {"name": "a, b\nc"}},
                                     {"userId": "u2", "properties": {"name": "d"}}]
        assert [item.line for item in items] == [3, 5, 6]

    def test_missing_column_is_a_config_error(self) -> None:
        """A mapped column that is not in the header is a ConfigError listing the columns."""
        with pytest.raises(ConfigError, match=r"'user_id' not in the header of log.csv \(columns: u, e\)"):
            list(read_csv(["u,e", "u1,x"], maps("userId=user_id"), source="log.csv"))

    def test_clashing_header_is_a_config_error(self) -> None:
        """Without --map, header columns that clash as paths are a ConfigError."""
        with pytest.raises(ConfigError, match="'context' and 'context.ip'"):
            list(read_csv(["context,context.ip", "a,b"]))

    def test_empty_file_gives_nothing(self) -> None:
        """A CSV without even a header yields no records."""
        assert list(read_csv([], maps("userId=u"))) == []

    def test_invalid_utf8_row_is_skipped(self) -> None:
        """A CSV line that is not UTF-8 skips its row; the byte-order mark of the header is dropped."""
        data = b"\xef\xbb\xbfuserId,event\nu1,A\nu2,B\xff\nu3,C\n"
        items = list(read_records(iter(data.splitlines(keepends=True)), "csv"))
        assert values([items[0], items[2]]) == [{"type": "track", "userId": "u1", "event": "A"},
                                                {"type": "track", "userId": "u3", "event": "C"}]
        assert items[1] == Skipped(3, "not valid UTF-8")


class TestReadJsonl:
    def test_lines_pass_through_byte_for_byte(self) -> None:
        """Without --map lines go as they are, malformed ones too; blank lines are skipped."""
        lines = [b'\xef\xbb\xbf{"userId": "u1",  "timestamp":"2024-05-01T10:00:00Z"}\r\n', b"\n", b"   \n",
                 b'{"anonymousId":"a1"}\n', b"{not json\n", b'["array"]\n', b"\xff\xfe\n", b'{"userId":"u9"}']
        items = list(read_jsonl(lines))
        assert [item.value for item in items if isinstance(item, Record)] == [
            b'{"userId": "u1",  "timestamp":"2024-05-01T10:00:00Z"}', b'{"anonymousId":"a1"}',
            b"{not json", b'["array"]', b"\xff\xfe", b'{"userId":"u9"}']
        assert [(item.line, item.key, item.event_time) for item in items if isinstance(item, Record)] == [
            (1, b"u1", 1714557600.0), (4, b"a1", None), (5, None, None), (6, None, None),
            (7, None, None), (8, b"u9", None)]

    def test_mapping_reads_top_level_and_dotted_keys(self) -> None:
        """With --map a column is a top-level key if there is one, else a dotted path into the row."""
        line = orjson.dumps({"uid": 5, "ev": {"name": "Product Added", "ts": 1714557600000},
                             "ev.name": "literal", "price": "9.5", "gone": None})
        [record] = read_jsonl([line], maps("userId=uid:str", "event=ev.name", "timestamp=ev.ts:epoch_ms",
                                           "properties.price=price", "properties.sku=gone",
                                           "properties.size=nope"))
        assert isinstance(record, Record)
        assert orjson.loads(record.value) == {"type": "track", "userId": "5", "event": "literal",
                                              "timestamp": "2024-05-01T10:00:00.000Z",
                                              "properties": {"price": "9.5"}}
        assert record.key == b"5"

    def test_mapping_skips_what_it_cannot_map(self) -> None:
        """With --map, lines that are not JSON objects or hold bad values are skipped with their line."""
        lines = [b"{oops\n", b"[1]\n", b'{"u":"u1","n":"x"}\n', b'{"u":"u2","n":1}\n',
                 b'{"u":"u3","n":99999999999999999999999}\n']
        items = list(read_jsonl(lines, maps("userId=u", "properties.n=n:int")))
        assert items[:2] == [Skipped(1, "not valid JSON"), Skipped(2, "not a JSON object")]
        assert items[2] == Skipped(3, "field 'properties.n' (column 'n'): not an integer: 'x'")
        assert values([items[3]]) == [{"userId": "u2", "properties": {"n": 1}}]
        assert items[4] == Skipped(5, "cannot be written as JSON: Integer exceeds 64-bit range")


class TestFiles:
    @pytest.mark.parametrize(("name", "fmt"), [
        ("log.csv", "csv"), ("log.CSV.GZ", "csv"), ("dir.csv/log.jsonl", "jsonl"), ("log.jsonl.gz", "jsonl"),
        ("log.json", "jsonl"), ("log", "jsonl"), ("log.csv.bak", "jsonl"),
    ])
    def test_format_from_suffix(self, name: str, fmt: str) -> None:
        """.csv and .csv.gz mean CSV, anything else JSONL."""
        assert detect_format(name) == fmt

    def test_gzip_is_recognised_by_content(self, tmp_path: Path) -> None:
        """A gzip file is decompressed whatever its name; a plain file is read as it is."""
        data = b'{"userId":"u1"}\n{"userId":"u2"}\n'
        for name, payload in (("a.jsonl.gz", gzip.compress(data)), ("b.jsonl", gzip.compress(data)),
                              ("c.jsonl", data)):
            (tmp_path / name).write_bytes(payload)
            with open_log(tmp_path / name) as stream:
                assert [r.key for r in read_records(stream, "jsonl")] == [b"u1", b"u2"]

    def test_gzipped_csv(self, tmp_path: Path) -> None:
        """A gzipped CSV reads like the plain one."""
        path = tmp_path / "log.csv.gz"
        path.write_bytes(gzip.compress(b"userId,properties.price\nu1,4.5\n"))
        with open_log(path) as stream:
            assert values(list(read_records(stream, detect_format(path)))) == [
                {"userId": "u1", "properties": {"price": 4.5}}]

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A file that cannot be opened is a ConfigError naming it."""
        with pytest.raises(ConfigError, match="nope.jsonl"):
            open_log(tmp_path / "nope.jsonl")


# --- pacing --------------------------------------------------------------------------


class TestPacing:
    def test_rate_schedule_is_kept_over_the_run(self) -> None:
        """--rate 200 sends 1000 events over (1000-1)/200 s, in sleeps no longer than the step."""
        clock = FakeClock()
        pacer = RatePacer(200.0, clock=clock, sleep=clock.sleep, step=0.05)
        sent_at = []
        for _ in range(1000):
            pacer.wait(None)
            sent_at.append(clock.now)
        assert sent_at[0] == 1000.0
        assert sent_at[-1] == pytest.approx(1000.0 + 999 / 200)
        assert sent_at[200] == pytest.approx(1001.0)
        assert max(clock.sleeps) <= 0.05

    def test_rate_catches_up_after_a_stall(self) -> None:
        """Events that fall behind the schedule (a stalled producer) go without sleeping until caught up."""
        clock = FakeClock()
        pacer = RatePacer(100.0, clock=clock, sleep=clock.sleep)
        pacer.wait(None)
        clock.now += 0.5  # stalled for 50 events' worth
        for _ in range(50):
            pacer.wait(None)
        assert clock.now == 1000.5
        pacer.wait(None)
        pacer.wait(None)
        assert clock.now == pytest.approx(1000.52)

    def test_speed_divides_event_time_gaps(self) -> None:
        """--speed 10 waits a tenth of each event-time gap, from the first timed event."""
        clock = FakeClock()
        pacer = SpeedPacer(10.0, clock=clock, sleep=clock.sleep)
        times = [5000.0, 5010.0, 5030.0]
        sent_at = []
        for t in times:
            pacer.wait(t)
            sent_at.append(clock.now)
        assert sent_at == [1000.0, pytest.approx(1001.0), pytest.approx(1003.0)]

    def test_speed_sends_untimed_and_older_events_at_once(self) -> None:
        """Events without a usable timestamp, or older than the anchor, go without waiting."""
        clock = FakeClock()
        pacer = SpeedPacer(1.0, clock=clock, sleep=clock.sleep)
        pacer.wait(None)
        pacer.wait(100.0)
        pacer.wait(None)
        pacer.wait(40.0)
        assert clock.sleeps == []
        pacer.wait(100.2)
        assert clock.now == pytest.approx(1000.2)

    @pytest.mark.parametrize("pacer", [RatePacer, SpeedPacer])
    def test_pace_must_be_positive(self, pacer: Callable[..., Any]) -> None:
        """A rate or speed of zero is refused."""
        with pytest.raises(ValueError):
            pacer(0.0)

    def test_rate_and_speed_are_exclusive(self) -> None:
        """--rate and --speed together, or a non-positive one, are usage errors."""
        for extra in (["--rate", "10", "--speed", "2"], ["--rate", "0"], ["--speed", "-1"],
                      ["--limit", "-1"]):
            with pytest.raises(SystemExit):
                own_parser().parse_args(["replay", "f.jsonl", "--topic", "t", *extra])


# --- the producing loop --------------------------------------------------------------


class TestProduceAll:
    def test_full_queue_is_polled_until_accepted(self) -> None:
        """A BufferError from a full queue is waited out by polling; nothing is lost or doubled."""
        producer = FakeProducer(full=3)
        summary = Summary()
        items: list[Record | Skipped] = [Record(i, b"%d" % i, None, None) for i in range(1, 6)]
        produce_all(producer, "t", items, summary)
        assert [value for _, value, _ in producer.sent] == [b"1", b"2", b"3", b"4", b"5"]
        assert producer.polls[:3] == [0.01, 0.01, 0.01]
        assert summary.sent == 5

    def test_limit_and_skips(self) -> None:
        """--limit counts sent events only; skipped rows are counted and reported, not sent."""
        producer = FakeProducer()
        summary = Summary()
        warned: list[Skipped] = []
        items: list[Record | Skipped] = [Record(1, b"a", b"k", None), Skipped(2, "bad"),
                                         Record(3, b"b", None, None), Record(4, b"c", None, None)]
        produce_all(producer, "t", items, summary, limit=2, on_skip=warned.append)
        assert producer.sent == [("t", b"a", b"k"), ("t", b"b", None)]
        assert (summary.sent, summary.skipped, warned) == (2, 1, [Skipped(2, "bad")])

    def test_refused_records_count_as_delivery_errors(self) -> None:
        """A record the producer refuses is reported with its line, counted as sent and not delivered."""

        class TooLarge(Exception):
            pass

        class Refusing(FakeProducer):
            def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
                if len(value) > 3:
                    raise TooLarge("message too large")
                super().produce(topic, value, key)

        producer = Refusing()
        summary = Summary()
        refused: list[tuple[int, str]] = []
        items: list[Record | Skipped] = [Record(1, b"a", None, None), Record(2, b"abcdef", None, None),
                                         Record(3, b"b", None, None)]
        produce_all(producer, "t", items, summary, refused=(TooLarge,),
                    on_refused=lambda item, exc: refused.append((item.line, str(exc))))
        assert [value for _, value, _ in producer.sent] == [b"a", b"b"]
        assert (summary.sent, summary.delivery_errors, refused) == (3, 1, [(2, "message too large")])

    def test_delivery_report_counts_failures(self) -> None:
        """The delivery callback counts failed reports and keeps the first three reasons."""
        report = DeliveryReport()
        for err in (None, "timed out", "gone", None, "no leader", "more"):
            report(err, object())
        assert (report.errors, report.reasons) == (4, ["timed out", "gone", "no leader"])

    def test_summary_line(self) -> None:
        """The summary line has the documented shape."""
        line = Summary(sent=300, skipped=1, delivery_errors=2, seconds=1.5).line()
        assert line == "replayed 300 events (1 skipped, 2 delivery errors) in 1.50 s: 200 events/s"
        assert SUMMARY.match(line)


# --- against a real broker -----------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., tuple[int, str, str]]:
    """Run `segstream replay ...` through the real dispatcher, with no SEGSTREAM_* from outside."""
    from segstream.cli import main  # noqa: PLC0415

    for name in [n for n in os.environ if n.startswith("SEGSTREAM_")]:
        monkeypatch.delenv(name)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["replay", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def summary_of(out: str) -> tuple[int, int, int, float, int]:
    match = SUMMARY.match(out.strip().splitlines()[-1])
    assert match, out
    sent, skipped, errors, seconds, rate = match.groups()
    return int(sent), int(skipped), int(errors), float(seconds), int(rate)


@pytest.mark.integration
class TestReplayIntoBroker:
    def test_csv_with_maps(self, kafka_broker: Any, topic_factory: Callable[..., str], tmp_path: Path,
                           cli: Callable[..., tuple[int, str, str]]) -> None:
        """Scenario: a CSV with one bad row is replayed with --map.

        We expect: the exact mapped JSON and keys on the topic, in file order, and the bad
        row reported by line and counted as skipped.
        """
        topic = topic_factory("replay")
        path = tmp_path / "orders.csv"
        path.write_text(
            "user_id,anon,action,ts_ms,platform,amount,qty\n"
            "u1,a1,Order Completed,1714557600250,ios,19.90,2\n"
            ",a2,Product Viewed,1714557601000,web,,\n"
            "u3,a3,Product Added,not-a-time,web,,1\n"
            "u4,,Cart Viewed,1714557603000,android,,\n",
            encoding="utf-8",
        )
        code, out, err = cli(
            str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap, "--no-progress",
            "--map", "userId=user_id", "--map", "anonymousId=anon", "--map", "event=action",
            "--map", "timestamp=ts_ms:epoch_ms", "--map", "context.device.type=platform",
            "--map", "properties.revenue=amount", "--map", "properties.quantity=qty",
        )
        assert code == 0, err
        assert summary_of(out)[:3] == (3, 1, 0)
        assert f"{path} line 4: skipped: field 'timestamp' (column 'ts_ms')" in err
        records = kafka_broker.read_topic(topic)
        assert [(r.key, orjson.loads(r.value)) for r in records] == [
            (b"u1", {"type": "track", "userId": "u1", "anonymousId": "a1", "event": "Order Completed",
                     "timestamp": "2024-05-01T10:00:00.250Z", "context": {"device": {"type": "ios"}},
                     "properties": {"revenue": 19.9, "quantity": 2}}),
            (b"a2", {"type": "track", "anonymousId": "a2", "event": "Product Viewed",
                     "timestamp": "2024-05-01T10:00:01.000Z", "context": {"device": {"type": "web"}}}),
            (b"u4", {"type": "track", "userId": "u4", "event": "Cart Viewed",
                     "timestamp": "2024-05-01T10:00:03.000Z", "context": {"device": {"type": "android"}}}),
        ]

    def test_jsonl_passes_through_byte_for_byte(
        self, kafka_broker: Any, topic_factory: Callable[..., str], tmp_path: Path,
        cli: Callable[..., tuple[int, str, str]],
    ) -> None:
        """Scenario: a gzipped JSONL log with a malformed line and a blank line is replayed without --map.

        We expect: every non-blank line on the topic byte for byte, keyed by userId, else
        anonymousId, else no key; the brokers come from the --config file.
        """
        topic = topic_factory("replay")
        lines = [b'{"type":"track","event":"A","userId":"u1","timestamp":"2024-05-01T10:00:00Z"}',
                 b'{"type":"page","anonymousId":"a2",  "timestamp":"2024-05-01T10:00:01Z"}',
                 b'{"type":"track","event":"B","userId":"u1",',
                 b"",
                 b'{"type":"identify","userId":"u3","traits":{"name":"\xc3\xa9"}}']
        path = tmp_path / "events.jsonl.gz"
        path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
        config = tmp_path / "segstream.toml"
        config.write_text(f'brokers = ["{kafka_broker.bootstrap}"]\n', encoding="utf-8")
        code, out, err = cli(str(path), "--topic", topic, "--config", str(config), "--no-progress")
        assert code == 0, err
        assert summary_of(out)[:3] == (4, 0, 0)
        records = kafka_broker.read_topic(topic)
        assert [(r.key, r.value) for r in records] == [
            (b"u1", lines[0]), (b"a2", lines[1]), (None, lines[2]), (b"u3", lines[4])]

    def test_rate_is_roughly_kept(self, kafka_broker: Any, topic_factory: Callable[..., str],
                                  tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
        """Scenario: 300 events are replayed with --rate 500, and 2000 more with --limit 50.

        We expect: the run takes at least (300-1)/500 s and reports close to 500 events/s;
        the limit stops after 50 events.
        """
        topic = topic_factory("replay")
        path = tmp_path / "many.jsonl"
        path.write_bytes(b"".join(b'{"userId":"u%d","event":"x"}\n' % i for i in range(300)))
        started = time.monotonic()
        code, out, err = cli(str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap,
                             "--no-progress", "--rate", "500")
        elapsed = time.monotonic() - started
        assert code == 0, err
        sent, _, errors, seconds, rate = summary_of(out)
        assert (sent, errors) == (300, 0)
        assert elapsed >= 299 / 500
        assert 250 <= rate <= 505, out
        assert seconds < 3.0
        code, out, err = cli(str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap,
                             "--no-progress", "--limit", "50")
        assert code == 0, err
        assert summary_of(out)[0] == 50
        assert len(kafka_broker.read_topic(topic)) == 350

    def test_speed_follows_event_time(self, kafka_broker: Any, topic_factory: Callable[..., str],
                                      tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
        """Scenario: five events 20 s apart in event time are replayed at --speed 200.

        We expect: the run takes about 80 s / 200 = 0.4 s.
        """
        topic = topic_factory("replay")
        path = tmp_path / "timed.jsonl"
        path.write_bytes(b"".join(b'{"userId":"u1","timestamp":"2024-05-01T10:%02d:%02dZ"}\n'
                                  % divmod(20 * i, 60) for i in range(5)))
        started = time.monotonic()
        code, out, err = cli(str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap,
                             "--no-progress", "--speed", "200")
        elapsed = time.monotonic() - started
        assert code == 0, err
        assert summary_of(out)[0] == 5
        assert 0.4 <= elapsed < 3.0

    def test_oversized_event_is_a_delivery_error(
        self, kafka_broker: Any, topic_factory: Callable[..., str], tmp_path: Path,
        cli: Callable[..., tuple[int, str, str]],
    ) -> None:
        """Scenario: one event is larger than a --producer-option message.max.bytes.

        We expect: that event reported by line and counted as a delivery error; the others
        arrive and the replay goes on; the exit code is 1 since not everything arrived.
        """
        topic = topic_factory("replay")
        path = tmp_path / "big.jsonl"
        big = b'{"userId":"u2","pad":"' + b"x" * 3000 + b'"}'
        path.write_bytes(b'{"userId":"u1"}\n' + big + b'\n{"userId":"u3"}\n')
        code, out, err = cli(str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap,
                             "--no-progress", "--producer-option", "message.max.bytes=1000")
        assert code == 1, err
        assert summary_of(out)[:3] == (3, 0, 1)
        assert f"{path} line 2: refused:" in err
        assert [r.key for r in kafka_broker.read_topic(topic)] == [b"u1", b"u3"]

    def test_missing_topic_fails_clearly(self, kafka_broker: Any, tmp_path: Path,
                                         cli: Callable[..., tuple[int, str, str]]) -> None:
        """Scenario: replay names a topic that does not exist.

        We expect: exit code 2, an error naming the topic and the brokers, nothing sent and
        the topic still absent (replay never creates topics).
        """
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        path = tmp_path / "e.jsonl"
        path.write_bytes(b'{"userId":"u1"}\n')
        topic = f"replay-missing-{uuid.uuid4().hex[:12]}"
        code, out, err = cli(str(path), "--topic", topic, "--brokers", kafka_broker.bootstrap,
                             "--no-progress")
        assert code == 2
        assert out == ""
        assert f"topic {topic!r} does not exist on Kafka brokers {kafka_broker.bootstrap}" in err
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        assert topic not in admin.list_topics(timeout=10).topics
