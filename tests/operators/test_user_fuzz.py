"""The whole user step under hostile input: arbitrary valid-but-extreme events never raise.

Not the parser alone: what the parser lets through (amounts at their bounds,
timestamps from the floor to the clock's skew, NULs and long strings in ids and
traits, integers of 64 bits, floats near the largest double) goes through
event time, timers, features, rules with population statistics, the models
(learning from what the step emits, warm after a handful of items) and the
output formats. Nothing may raise, and nothing non-finite may reach state,
Redis or the topic.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segstream.operators.changes import change_value
from segstream.operators.event_time import PartitionWatermark, Stamped, Tick
from segstream.operators.events import Event
from segstream.operators.features import FeatureConfig, stamp_event
from segstream.operators.models import ModelConfig, ModelHub, Models
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic, UserUpdate
from segstream.state.profile import UserState

from segstream.config import load_segments

NOW = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
PARSER = EventParser(clock=lambda: NOW)
"""The worker's validator with its default bounds, at a fixed wall clock."""
# Naive bounds: Hypothesis attaches the time zones itself.
FLOOR = datetime(2000, 1, 1)  # noqa: DTZ001
CEILING = datetime(2026, 12, 4, 1, 0)  # noqa: DTZ001 - NOW + max_future_skew_s

amounts = st.one_of(
    st.floats(-1e9, 1e9, allow_nan=False), st.integers(-10**9, 10**9),
    st.sampled_from([0, -0.0, 5e-324, 1e9, -1e9, 999_999_999.999, 1e-300]),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(["\x00", "a\x00b", "é" * 300, "😀", " "]))
scalars = st.one_of(
    texts, st.booleans(), st.none(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1.7976931348623157e308]),
)
trait_values = st.one_of(scalars, st.lists(scalars, max_size=3),
                         st.dictionaries(texts, scalars, max_size=2))
stamps = st.datetimes(min_value=FLOOR, max_value=CEILING, timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]))
names = st.sampled_from(["Product Viewed", "Product Added", "Checkout Started", "Order Completed",
                         "Products Searched", "Signed Up", "Page Viewed", "x\x00y"])
calls = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "track", "track", "page", "identify", "alias", "screen"]),
        "event": names,
        "userId": st.sampled_from(["u1", "u2\x00", 18446744073709551615, "é" * 200]),
        "timestamp": stamps.map(lambda moment: moment.isoformat()),
    },
    optional={
        "messageId": texts,
        "properties": st.fixed_dictionaries({}, optional={
            "revenue": amounts, "total": amounts, "price": amounts,
            "quantity": st.floats(-1e6, 1e6, allow_nan=False),
            "products": st.lists(st.fixed_dictionaries({}, optional={
                "price": amounts, "quantity": st.integers(-10**6, 10**6)}), max_size=3),
        }),
        "context": st.fixed_dictionaries({}, optional={
            "device": st.fixed_dictionaries({}, optional={"type": texts | scalars}),
            "location": st.fixed_dictionaries({}, optional={"country": texts | scalars}),
            "campaign": st.fixed_dictionaries({}, optional={"source": texts}),
        }),
        "traits": st.dictionaries(texts, trait_values, max_size=40),
    },
)
items = st.lists(st.one_of(calls.map(lambda doc: ("event", doc)),
                           st.floats(NOW - 40 * 365 * 86400.0, NOW + 3600.0).map(
                               lambda watermark: ("tick", watermark))),
                 min_size=1, max_size=30)


def finite_json(value: object) -> None:
    """Every number in ``value`` is finite (orjson writes NaN and infinity as null)."""
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for inner in value.values():
            finite_json(inner)
    elif isinstance(value, list):
        for inner in value:
            finite_json(inner)


def check_update(update: UserUpdate) -> None:
    fields = update.profile
    assert all(isinstance(value, str) for value in fields.values())
    for name in ("revenue_total", "engagement", "aov_90d", "revenue_30d", "revenue_90d",
                 "churn_p", "session_length_s", "since_last_seen_s", "age_s"):
        if fields.get(name):
            assert math.isfinite(float(fields[name])), (name, fields[name])
    assert update.version < 2**53
    for change in update.changes:
        doc = orjson.loads(change_value(change, emitted_at=NOW))
        finite_json(doc)
        assert 0 < doc["version"] < 2**53
    for item in update.learn:
        for vector in (item.cluster_x, item.churn_x):
            for value in (vector or {}).values():
                assert math.isfinite(value)


def config() -> UserConfig:
    segments = load_segments()  # the shipped file: population statistics, model transitions
    population = segments.new_population()
    population.min_users = 1  # so rules on statistics decide from the first buyer
    hub = ModelHub(ModelConfig(cluster_warmup=4, churn_warmup=2, snapshot_every_events=2))
    hub.install(Models(hub.config))
    return UserConfig(features=FeatureConfig(journey=segments.journey, cart=segments.cart_abandoner),
                      rules=segments.rules, population=population, hub=hub, models=hub.config,
                      max_pending_events=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items)
def test_extreme_valid_input_never_raises_and_stays_finite(script: list[tuple[str, object]]) -> None:
    """Whatever valid-but-extreme events and watermarks come, in any order: no exception, and
    every profile, change, learn item, state and population statistic stays finite."""
    settings_ = config()
    hub = settings_.hub
    assert hub is not None
    logics: dict[str, UserLogic] = {}
    clock = PartitionWatermark(30.0)
    for kind, payload in script:
        if kind == "tick":
            arrivals: list[tuple[str, Stamped | Tick]] = [
                (key, Tick(float(payload), "clicks:0")) for key in logics]  # type: ignore[arg-type]
        else:
            event = PARSER.parse(orjson.dumps(payload))
            if not isinstance(event, Event):
                continue
            arrivals = [(event.key, stamp_event(event, clock.observe(event.timestamp), "clicks:0"))]
        for key, item in arrivals:
            logic = logics.setdefault(key, UserLogic(settings_, None))
            updates = logic.on_items([item])
            for update in updates:
                check_update(update)
                hub.learn(update.learn)
            if logic.data is not None:
                state = UserState.from_bytes(logic.data)
                assert state.to_bytes() == logic.data
                finite_json(orjson.loads(logic.data))
    population = settings_.population
    assert population is not None
    for stats in population.snapshot().values():
        assert all(value is None or math.isfinite(value) for value in stats.values())
