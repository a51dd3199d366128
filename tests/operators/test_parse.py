"""Parsing and validation: every kind of bad input is a Rejected with its reason, nothing raises."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.operators.events import Event, Reason, Rejected
from segstream.operators.parse import EventParser, parse_timestamp
from segstream.operators.taxonomy import Taxonomy

PARSER = EventParser()
GOOD = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "anonymousId": "a1",
    "messageId": "m1",
    "timestamp": "2024-05-01T10:00:00.250Z",
    "properties": {"revenue": 12.5, "product_id": "p1"},
    "context": {"device": {"type": "mobile"}},
}


def parse(doc: object, **kw: object) -> Event | Rejected:
    return PARSER.parse(orjson.dumps(doc), **kw)


def with_(**changes: object) -> dict[str, object]:
    doc = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


class TestValidEvents:
    def test_track_event_fields(self) -> None:
        """A full track call becomes an Event with identity, role, time and revenue."""
        event = parse(GOOD)
        assert isinstance(event, Event)
        assert (event.key, event.user_id, event.anonymous_id) == ("u1", "u1", "a1")
        assert (event.type, event.name, event.role) == ("track", "Order Completed", "purchase")
        assert event.timestamp == 1714557600.25
        assert event.revenue == 12.5
        assert event.message_id == "m1"

    def test_anonymous_identity(self) -> None:
        """Without userId the key is the anonymousId."""
        event = parse(with_(userId=...))
        assert isinstance(event, Event) and event.key == "a1" and event.user_id is None

    def test_integer_user_id_is_read_as_string(self) -> None:
        """Integer ids, common in exported logs, become their decimal string."""
        event = parse(with_(userId=42))
        assert isinstance(event, Event) and event.key == "42"

    def test_missing_type_with_event_is_track(self) -> None:
        """A row with an event name and no type is a track call."""
        event = parse(with_(type=...))
        assert isinstance(event, Event) and event.type == "track"

    def test_page_call_is_page_view(self) -> None:
        """Page calls play the page_view role whatever their name."""
        event = parse(with_(type="page", event=..., name="Home"))
        assert isinstance(event, Event) and event.role == "page_view" and event.name == "Home"

    def test_timestamp_without_offset_is_utc(self) -> None:
        """A naive ISO timestamp is read as UTC."""
        event = parse(with_(timestamp="2024-05-01T10:00:00"))
        assert isinstance(event, Event) and event.timestamp == 1714557600.0

    def test_timestamp_with_offset(self) -> None:
        """An offset is honoured."""
        event = parse(with_(timestamp="2024-05-01T12:00:00+02:00"))
        assert isinstance(event, Event) and event.timestamp == 1714557600.0

    def test_unknown_fields_are_ignored(self) -> None:
        """Fields outside the spec do not matter."""
        assert isinstance(parse(with_(sentAt="x", extra={"a": [1]})), Event)

    def test_total_stands_in_for_revenue(self) -> None:
        """properties.total is used when revenue is absent."""
        event = parse(with_(properties={"total": 3}))
        assert isinstance(event, Event) and event.revenue == 3.0

    def test_identify_traits(self) -> None:
        """identify keeps its traits for the profile."""
        event = parse({"type": "identify", "userId": "u1", "timestamp": "2024-05-01T10:00:00Z",
                       "traits": {"email": "a@b.c"}})
        assert isinstance(event, Event) and event.traits == {"email": "a@b.c"} and event.role is None

    def test_missing_message_id_uses_source_coordinates(self) -> None:
        """Without messageId the cause is topic:partition:offset."""
        event = parse(with_(messageId=...), topic="t", partition=1, offset=9)
        assert isinstance(event, Event) and event.message_id == "t:1:9"

    def test_missing_message_id_without_source_hashes_the_bytes(self) -> None:
        """Without messageId or source coordinates the cause is a hash of the bytes."""
        first = parse(with_(messageId=...))
        again = parse(with_(messageId=...))
        assert isinstance(first, Event) and first.message_id.startswith("sha1:")
        assert isinstance(again, Event) and again.message_id == first.message_id

    def test_custom_taxonomy(self) -> None:
        """Renamed events map to roles through the taxonomy alone."""
        parser = EventParser(taxonomy=Taxonomy.build({"purchase": ["purchase"]}))
        event = parser.parse(orjson.dumps(with_(event="purchase")))
        assert isinstance(event, Event) and event.role == "purchase"


BAD_INPUTS = [
    pytest.param(None, Reason.EMPTY, id="tombstone"),
    pytest.param(b"", Reason.EMPTY, id="empty"),
    pytest.param(b'{"type": "track", "event": "x"', Reason.NOT_JSON, id="truncated"),
    pytest.param(b"\xff\xfe", Reason.NOT_JSON, id="not-utf8"),
    pytest.param(b"[1, 2]", Reason.NOT_OBJECT, id="array"),
    pytest.param(b'"text"', Reason.NOT_OBJECT, id="string"),
    pytest.param(orjson.dumps(with_(type="shout")), Reason.BAD_TYPE, id="unknown-type"),
    pytest.param(orjson.dumps(with_(type=..., event=...)), Reason.BAD_TYPE, id="no-type"),
    pytest.param(orjson.dumps(with_(event=...)), Reason.MISSING_EVENT, id="track-no-event"),
    pytest.param(orjson.dumps(with_(userId=..., anonymousId=...)), Reason.MISSING_ID, id="no-id"),
    pytest.param(orjson.dumps(with_(userId="", anonymousId="")), Reason.MISSING_ID, id="empty-ids"),
    pytest.param(orjson.dumps(with_(timestamp=...)), Reason.MISSING_TIMESTAMP, id="no-ts"),
    pytest.param(orjson.dumps(with_(timestamp="yesterday")), Reason.BAD_TIMESTAMP, id="bad-ts"),
    pytest.param(orjson.dumps(with_(timestamp=1714557600)), Reason.BAD_TIMESTAMP, id="number-ts"),
    pytest.param(orjson.dumps(with_(userId=["u1"])), Reason.WRONG_TYPE, id="list-id"),
    pytest.param(orjson.dumps(with_(userId=True)), Reason.WRONG_TYPE, id="bool-id"),
    pytest.param(orjson.dumps(with_(properties=[1])), Reason.WRONG_TYPE, id="list-properties"),
    pytest.param(orjson.dumps(with_(context="x")), Reason.WRONG_TYPE, id="string-context"),
    pytest.param(orjson.dumps(with_(event=5)), Reason.WRONG_TYPE, id="number-event"),
    pytest.param(orjson.dumps(with_(properties={"revenue": "12"})), Reason.WRONG_TYPE,
                 id="string-revenue"),
    pytest.param(b"{" + b'"a":"' + b"x" * 40000 + b'"}', Reason.OVERSIZED, id="oversized"),
]


HOSTILE_VALUES = [
    pytest.param({"revenue": 1e303}, "properties.revenue", id="revenue-1e303"),
    pytest.param({"revenue": 1e308}, "properties.revenue", id="revenue-1e308"),
    pytest.param({"revenue": 1e140}, "properties.revenue", id="revenue-1e140"),
    pytest.param({"revenue": -1e10}, "properties.revenue", id="revenue-negative"),
    pytest.param({"total": 2**63}, "properties.total", id="total-huge-int"),
    pytest.param({"revenue": 5, "price": 1e20}, "properties.price", id="price"),
    pytest.param({"quantity": 1e7}, "properties.quantity", id="quantity"),
    pytest.param({"products": [{"price": 3}, {"price": 1e12}]}, "properties.products[1].price",
                 id="product-price"),
    pytest.param({"products": [{"quantity": -1e9}]}, "properties.products[0].quantity",
                 id="product-quantity"),
]


@pytest.mark.parametrize(("properties", "field"), HOSTILE_VALUES)
def test_out_of_range_amounts_are_bad_values(properties: dict[str, object], field: str) -> None:
    """An amount beyond its bound is dead-lettered as bad_value with a detail naming the field."""
    result = parse(with_(properties=properties))
    assert isinstance(result, Rejected)
    assert result.reason == Reason.BAD_VALUE
    assert result.detail.startswith(field + " is ")


def test_amounts_at_their_bounds_are_accepted() -> None:
    """Amounts up to their bounds, negative ones included (refunds), are accepted."""
    parser = EventParser(max_revenue=100.0, max_price=10.0, max_quantity=2.0)
    for revenue in (100.0, -100.0, 0, 99):
        event = parser.parse(orjson.dumps(with_(properties={
            "revenue": revenue, "price": 10.0, "quantity": -2, "products": [{"price": 10}]})))
        assert isinstance(event, Event) and event.revenue == float(revenue)
    rejected = parser.parse(orjson.dumps(with_(properties={"revenue": 100.5})))
    assert isinstance(rejected, Rejected) and rejected.reason == Reason.BAD_VALUE


@pytest.mark.parametrize("name", ["price", "quantity"])
def test_amounts_of_the_wrong_type(name: str) -> None:
    """A price or quantity that is not a number is wrong_type, naming the field."""
    result = parse(with_(properties={"products": [{name: "12.5"}]}))
    assert isinstance(result, Rejected) and result.reason == Reason.WRONG_TYPE
    assert name in result.detail


NOW = 1714557600.0  # 2024-05-01T10:00:00Z, the clock of the parser below


class TestEventTimeOutliers:
    """Clock outliers are dead-lettered before they can move a watermark."""

    parser = EventParser(clock=lambda: NOW, max_future_skew_s=60.0)

    def reason(self, stamp: str) -> Reason | None:
        result = self.parser.parse(orjson.dumps(with_(timestamp=stamp)))
        return result.reason if isinstance(result, Rejected) else None

    def test_far_future_is_future(self) -> None:
        """The year 9999, and anything beyond the skew, is 'future'."""
        assert self.reason("9999-12-31T23:59:59Z") == Reason.FUTURE
        assert self.reason("2024-05-01T10:01:00.001Z") == Reason.FUTURE
        assert self.reason("2024-05-01T10:01:00Z") is None  # exactly the skew

    def test_before_the_floor_is_too_old(self) -> None:
        """A device clock reset to 1970 is 'too_old'; the floor itself is accepted."""
        assert self.reason("1970-01-01T00:00:00Z") == Reason.TOO_OLD
        assert self.reason("1999-12-31T23:59:59.999Z") == Reason.TOO_OLD
        assert self.reason("2000-01-01T00:00:00Z") is None

    def test_utc_outside_years_1_to_9999_is_bad_timestamp(self) -> None:
        """Offsets that push the UTC time out of what ISO-8601 can spell are bad_timestamp."""
        assert self.reason("9999-12-31T23:59:59-23:59") == Reason.BAD_TIMESTAMP
        assert self.reason("0001-01-01T00:00:00+01:00") == Reason.BAD_TIMESTAMP

    def test_floor_is_configurable_for_backfills(self) -> None:
        """A backfill of an old log lowers min_event_time."""
        parser = EventParser(min_event_time=0.0)
        event = parser.parse(orjson.dumps(with_(timestamp="1999-05-01T00:00:00Z")))
        assert isinstance(event, Event)


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS)
def test_bad_input_is_rejected_with_reason(raw: bytes | None, reason: Reason) -> None:
    """Each kind of unusable input is rejected with its reason, original bytes and source."""
    result = PARSER.parse(raw, key=b"k", topic="clicks", partition=2, offset=7)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.raw == raw
    assert (result.key, result.topic, result.partition, result.offset) == (b"k", "clicks", 2, 7)
    assert result.detail


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Whatever the bytes, the parser returns an Event or a Rejected."""
    assert isinstance(PARSER.parse(raw), Event | Rejected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
segmentish = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "page", "screen", "identify", "alias", "x"]) | json_values,
        "event": st.sampled_from(["Order Completed", "Product Viewed"]) | json_values,
        "userId": st.text(max_size=5) | json_values,
        "anonymousId": st.text(max_size=5) | json_values,
        "timestamp": st.sampled_from(["2024-05-01T10:00:00Z", "2024-13-01", "9999-12-31T23:59:59Z",
                                      "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59",
                                      "1970-01-01T00:00:00Z"]) | json_values,
        "properties": st.dictionaries(
            st.sampled_from(["revenue", "total", "price", "quantity", "products"]),
            json_values | st.floats(allow_nan=False) | st.lists(
                st.dictionaries(st.sampled_from(["price", "quantity"]), json_values), max_size=3))
        | json_values,
        "context": json_values,
        "traits": json_values,
    },
)


@settings(max_examples=1000, deadline=None)
@given(segmentish)
def test_arbitrary_segment_like_objects_never_raise(doc: dict[str, object]) -> None:
    """Objects shaped like Segment calls with any field types parse or reject, never raise.

    What is accepted has a bounded revenue and a timestamp between the floor and
    the clock plus the skew.
    """
    result = PARSER.parse(orjson.dumps(doc))
    assert isinstance(result, Event | Rejected)
    if isinstance(result, Event):
        assert isinstance(result.key, str) and result.key
        assert isinstance(result.timestamp, float)
        assert PARSER.min_event_time <= result.timestamp <= time.time() + PARSER.max_future_skew_s
        assert isinstance(result.revenue, float)
        assert abs(result.revenue) <= PARSER.max_revenue


ANY_TIME_PARSER = EventParser(min_event_time=-1e12, max_future_skew_s=1e12)
"""Accepts every timestamp ISO-8601 can spell: what a backfill with the floor and skew opened up sees."""


@settings(max_examples=500, deadline=None)
# Hypothesis takes naive bounds and attaches the time zones itself.
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),  # noqa: DTZ001
                    timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=14)),
                                               timezone(-timedelta(hours=23, minutes=59))])))
def test_every_accepted_timestamp_round_trips_through_every_output(moment: datetime) -> None:
    """A timestamp the parser accepts comes back, to the millisecond, from every place it is written:
    a change's event_time, a profile's first_seen/last_seen, the dead letter's detail."""
    from segstream.operators.changes import change_value  # noqa: PLC0415
    from segstream.operators.events import Change  # noqa: PLC0415
    from segstream.operators.features import FeatureConfig, apply_fact, fact_of, features  # noqa: PLC0415
    from segstream.operators.user import profile_fields  # noqa: PLC0415
    from segstream.state.profile import Profile, UserState  # noqa: PLC0415

    event = ANY_TIME_PARSER.parse(orjson.dumps(with_(timestamp=moment.isoformat())))
    if isinstance(event, Rejected):  # outside years 1-9999 once in UTC: nothing to write
        assert event.reason == Reason.BAD_TIMESTAMP
        return
    expected = round(event.timestamp * 1000)
    change = Change("u1", "rule", "loyal", "enter", None, event.timestamp, 1, "m1")
    written = [orjson.loads(change_value(change, emitted_at=event.timestamp))["event_time"]]
    profile = Profile()
    apply_fact(profile, fact_of(event, FeatureConfig()), FeatureConfig())
    fields = profile_fields(features(profile, FeatureConfig()), UserState("u1"), profile)
    written += [fields["first_seen"], fields["last_seen"], fields["last_purchase"]]
    for text in written:
        again = parse_timestamp(text)
        assert again is not None and round(again * 1000) == expected, (text, event.timestamp)
