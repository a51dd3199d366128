"""The batch oracle against small logs whose features were worked out by hand from docs/features.md."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from segstream.operators.events import Event
from segstream.operators.parse import EventParser, parse_timestamp

from tests.oracle.batch_features import parse_horizon, recompute

BASE = datetime(2024, 1, 1, tzinfo=UTC)  # a day, hour and 5-minute bucket edge
B = BASE.timestamp()
DAY = 86400.0


def at(seconds: float) -> str:
    """ISO time ``seconds`` after BASE, to the millisecond."""
    return (BASE + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_counter = iter(range(10**9))


def ev(name: str, seconds: float, *, user: str = "u1", mid: str | None = None,
       **extra: Any) -> dict[str, Any]:
    """A track (or ``page``/``identify`` when ``name`` is that call type) at BASE + ``seconds``."""
    doc: dict[str, Any] = {"userId": user, "timestamp": at(seconds),
                           "messageId": mid if mid is not None else f"m{next(_counter):09d}"}
    if name in ("page", "screen", "identify", "alias"):
        doc["type"] = name
        if name in ("page", "screen"):
            doc["name"] = "Home"
    else:
        doc["type"] = "track"
        doc["event"] = name
    doc.update(extra)
    return doc


VIEW, ADD, CHECKOUT, ORDER, SEARCH = (
    "Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Products Searched")
ROLES = ("product_view", "search", "add_to_cart", "checkout", "purchase")


def one(events: list[dict[str, Any]], **kwargs: Any) -> dict[str, object]:
    users = recompute(events, **kwargs)
    assert list(users) == ["u1"]
    return users["u1"]


class TestShape:
    def test_exact_keys_and_types(self) -> None:
        features = one([ev("page", 0), ev(VIEW, 10)], window_horizons=("1h", "2h"))
        windows = {f"{role}_{h}" for role in (*ROLES, "sessions") for h in ("1h", "2h")}
        assert set(features) == windows | {
            "events_total", "late_total", "first_seen", "last_seen", "sessions_total", "session_events",
            "session_length_s", "events_per_session", "bounce_rate", "purchases_total", "revenue_total",
            "purchases_30d", "purchases_90d", "revenue_30d", "revenue_90d", "aov_90d", "last_purchase",
            "since_last_purchase_s", "engagement", "device", "country", "channel", "traits",
            "completeness", "cart_abandoned_total", "journey", "segments", "since_last_seen_s",
            "age_s", "cart_abandoned"}
        for name in ("events_total", "late_total", "sessions_total", "session_events", "purchases_total",
                     "purchases_30d", "purchases_90d", "cart_abandoned_total", *windows):
            assert type(features[name]) is int, name
        for name in ("first_seen", "last_seen", "session_length_s", "events_per_session", "bounce_rate",
                     "revenue_total", "revenue_30d", "revenue_90d", "aov_90d", "engagement", "completeness"):
            assert type(features[name]) is float, name
        assert features["late_total"] == 0
        assert (features["first_seen"], features["last_seen"]) == (B, B + 10)

    def test_user_key_and_call_types(self) -> None:
        """userId if non-empty, else anonymousId; a typeless event is a track; page/screen are page views."""
        events = [
            {"userId": "", "anonymousId": "anon", "event": "Product Viewed", "timestamp": at(0)},
            {"anonymousId": "anon", "type": "screen", "name": "Settings", "timestamp": at(1)},
            {"userId": "u2", "anonymousId": "anon", "type": "track", "event": "products searched",
             "messageId": "x", "timestamp": at(2)},
        ]
        users = recompute(events)
        assert sorted(users) == ["anon", "u2"]
        assert users["anon"]["events_total"] == 2
        assert users["anon"]["product_view_1h"] == 1
        assert users["anon"]["journey"] == "consideration"
        assert users["u2"]["search_1h"] == 1  # role names match case-insensitively

    def test_horizon_resolutions(self) -> None:
        assert parse_horizon("1h") == (3600, 300)
        assert parse_horizon("2h") == (7200, 300)  # 2 hours is fewer than 7
        assert parse_horizon("7h") == (25200, 3600)
        assert parse_horizon("24h") == (86400, 3600)
        assert parse_horizon("7d") == (604800, 86400)
        assert parse_horizon("10m") == (600, 60)
        for bad in ("90s", "5m", "1x", "h"):
            with pytest.raises(ValueError, match="horizon"):
                parse_horizon(bad)


class TestSessions:
    def test_sessions_and_bounce(self) -> None:
        # Gaps 100, 1800 (not more than the gap: same session), 1801 (new), 3299 (new), 10.
        events = [ev("page", s) for s in (0, 100, 1900, 3701, 7000, 7010)]
        features = one(events[::-1])
        assert features["sessions_total"] == 3  # sizes 3, 1, 2
        assert features["session_events"] == 2
        assert features["session_length_s"] == 10.0
        assert features["events_per_session"] == 2.0
        assert features["bounce_rate"] == pytest.approx(1 / 3)

    def test_custom_gap(self) -> None:
        features = one([ev("page", s) for s in (0, 100, 1900, 3701, 7000, 7010)], session_gap_s=50)
        assert features["sessions_total"] == 5  # 0 / 100 / 1900 / 3701 / 7000+7010
        assert features["bounce_rate"] == 0.8
        assert features["session_length_s"] == 10.0

    def test_single_event(self) -> None:
        features = one([ev("identify", 5)])
        assert (features["sessions_total"], features["session_events"]) == (1, 1)
        assert features["bounce_rate"] == 1.0
        assert features["session_length_s"] == 0.0


class TestWindows:
    def test_bucket_edges_of_the_1h_window(self) -> None:
        """1h counts in 5-minute buckets: at T = B + 3750 (bucket 12), buckets 1..12 count."""
        events = [
            ev(VIEW, 0),  # bucket 0: out
            ev(VIEW, 299.999),  # bucket 0, 3450.001 s before T: out although within an hour
            ev(VIEW, 300),  # bucket 1, on its edge: in
            ev(VIEW, 3600),  # bucket 12 edge: in
            ev(SEARCH, 3750),  # T itself: in
        ]
        features = one(events)
        assert features["product_view_1h"] == 2
        assert features["search_1h"] == 1
        assert features["product_view_24h"] == 4  # 1-hour buckets 0 and 1: all in
        assert features["add_to_cart_1h"] == 0

    def test_bucket_edges_of_the_24h_window(self) -> None:
        """24h counts in hour buckets: at T = B + 1 day + 30 min (bucket 24), buckets 1..24 count."""
        events = [ev(ADD, 3599.999), ev(ADD, 3600), ev(CHECKOUT, DAY + 1800)]
        features = one(events)
        assert features["add_to_cart_24h"] == 1
        assert features["add_to_cart_7d"] == 2
        assert features["checkout_1h"] == features["checkout_24h"] == 1

    def test_day_windows(self) -> None:
        """7d at T = B + 7 days + 1 s (day 7): days 1..7 count."""
        events = [ev(VIEW, DAY - 0.001), ev(VIEW, DAY), ev(VIEW, 7 * DAY + 1)]
        features = one(events)
        assert features["product_view_7d"] == 2
        assert features["product_view_30d"] == 3


class TestPurchases:
    def test_frequency_monetary_and_aov(self) -> None:
        """T = 2024-03-31T12:00Z is day 90 after B: 90d holds days 1..90, 30d days 61..90."""
        events = [
            ev(ORDER, 3600, properties={"revenue": 100}),  # day 0: out of both
            ev(ORDER, DAY, properties={"total": 30}),  # day 1 edge: 90d only
            ev(ORDER, 61 * DAY - 0.001, properties={"revenue": 9.5, "total": 1000}),  # day 60: 90d only
            ev(ORDER, 61 * DAY, properties={"revenue": 20.5}),  # day 61 edge: both
            ev(CHECKOUT, 62 * DAY, properties={"value": 50}),  # not a purchase
            ev("page", 90.5 * DAY),
        ]
        features = one(events)
        assert features["purchases_total"] == 4
        assert features["revenue_total"] == 160.0
        assert (features["purchases_90d"], features["revenue_90d"]) == (3, 60.0)
        assert (features["purchases_30d"], features["revenue_30d"]) == (1, 20.5)
        assert features["purchase_30d"] == 1
        assert features["aov_90d"] == 20.0
        assert features["last_purchase"] == B + 61 * DAY
        assert features["since_last_purchase_s"] == 29.5 * DAY

    def test_no_purchase(self) -> None:
        features = one([ev(VIEW, 0, properties={"revenue": 5})])
        assert (features["purchases_total"], features["revenue_total"], features["aov_90d"]) == (0, 0.0, 0.0)
        assert features["last_purchase"] is None and features["since_last_purchase_s"] is None

    def test_purchase_without_amount(self) -> None:
        features = one([ev(ORDER, 0, properties={"currency": "USD"})])
        assert (features["purchases_total"], features["revenue_total"], features["aov_90d"]) == (1, 0.0, 0.0)
        assert features["since_last_purchase_s"] == 0.0


class TestEngagement:
    def test_two_events(self) -> None:
        """A view a half-life before T weighs 1/2, an add at T weighs 3; identify weighs 0."""
        events = [ev(VIEW, 0), ev("identify", DAY), ev(ADD, 7 * DAY)]
        assert one(events)["engagement"] == pytest.approx(3.5)
        assert one(events, engagement_half_life_s=3.5 * DAY)["engagement"] == pytest.approx(3.25)
        assert one(events, engagement_weights={"add_to_cart": 1.0})["engagement"] == pytest.approx(1.5)

    def test_roleless_and_other_roles(self) -> None:
        events = [ev("Something Else", 0), ev("page", 0), ev(ORDER, 0), ev("Signed Up", 0), ev("alias", 0)]
        assert one(events)["engagement"] == pytest.approx(1 + 1 + 10 + 2 + 0)


class TestContext:
    def test_latest_device_and_country_first_channel(self) -> None:
        events = [
            ev("page", 100, context={"device": {"type": "desktop"}, "campaign": {"source": "social"}}),
            ev("page", 200, context={"location": {"country": ""}, "device": {}}),
            ev("page", 50, context={"device": {"type": "mobile"}, "location": {"country": "US"},
                                    "campaign": {"source": "email"}}),
            ev("page", 10),
        ]
        features = one(events)  # input out of order on purpose
        assert (features["device"], features["country"], features["channel"]) == ("desktop", "US", "email")

    def test_none_without_context(self) -> None:
        features = one([ev("page", 0, context={"device": "mobile"})])
        assert (features["device"], features["country"], features["channel"]) == (None, None, None)


class TestTraits:
    def test_merge_truncation_and_max_traits(self) -> None:
        events = [
            ev("identify", 10, traits={"email": "a@x.io", "plan": "free", "nested": {"a": 1}, "tags": [1],
                                       "none": None, "bio": "x" * 250}),
            ev("page", 20, context={"traits": {"plan": "pro", "age": 30}}),
            ev("identify", 0, traits={"plan": "trial", "vip": True}),
        ]
        # Timeline: plan, vip; then email, (plan), bio = 4 keys; then plan updates and age is dropped.
        features = one(events, max_traits=4)
        assert features["traits"] == {"plan": "pro", "vip": True, "email": "a@x.io", "bio": "x" * 200}
        assert one(events)["traits"] == {"plan": "pro", "vip": True, "email": "a@x.io", "bio": "x" * 200,
                                         "age": 30}

    def test_context_traits_only_without_traits(self) -> None:
        events = [
            ev("identify", 0, traits={"plan": "gold"}, context={"traits": {"score": 5}}),
            ev("track", 1, event="Loyalty", traits={}, context={"traits": {"score": 2.5}}),
        ]
        assert one(events)["traits"] == {"plan": "gold", "score": 2.5}


class TestCompleteness:
    def test_default_required(self) -> None:
        full = ev("identify", 0, user="a", traits={"email": "a@x.io"},
                  context={"location": {"country": "FR"}})
        no_email = ev("page", 0, user="b", context={"location": {"country": "FR"}})
        trait_country = ev("identify", 0, user="c", traits={"email": "c@x.io", "country": "DE"})
        null_email = ev("identify", 0, user="d", traits={"email": None})
        users = recompute([full, no_email, trait_country, null_email])
        assert (users["a"]["completeness"], users["a"]["segments"]) == (1.0, [])
        assert (users["b"]["completeness"], users["b"]["segments"]) == (0.5, ["needs_enrichment"])
        assert (users["c"]["completeness"], users["c"]["segments"]) == (1.0, [])
        assert (users["d"]["completeness"], users["d"]["segments"]) == (0.0, ["needs_enrichment"])

    def test_custom_required(self) -> None:
        events = [ev("identify", 0, traits={"email": "a@x.io"}, context={"device": {"type": "tv"}})]
        features = one(events, required_attributes=("email", "device", "channel", "plan"))
        assert (features["completeness"], features["segments"]) == (0.5, ["needs_enrichment"])
        assert one(events, required_attributes=())["completeness"] == 1.0


def cart(add_at: float, *, views: tuple[float, ...] = (-500, -400, -300, -200, -100)) -> list[dict[str, Any]]:
    """Product views at ``add_at`` + each offset, then an add at ``add_at``."""
    return [ev(VIEW, add_at + offset) for offset in views] + [ev(ADD, add_at)]


class TestCartTrigger:
    START = 1000.0
    DEADLINE = 1000.0 + DAY

    def test_fires(self) -> None:
        features = one(cart(self.START), final_watermarks=self.DEADLINE + 0.001 + B)
        assert features["cart_abandoned_total"] == 1
        assert features["segments"] == ["cart_abandoner", "needs_enrichment"]

    def test_not_fired_until_the_watermark_passes_the_deadline(self) -> None:
        for watermark in (None, B + self.DEADLINE, {"someone else": B + 10 * DAY}):
            features = one(cart(self.START), final_watermarks=watermark)
            assert features["cart_abandoned_total"] == 0
            assert "cart_abandoner" not in features["segments"]  # type: ignore[operator]
        assert one(cart(self.START), final_watermarks={"u1": B + 2 * DAY})["cart_abandoned_total"] == 1

    def test_views_window_is_inclusive_and_needs_five(self) -> None:
        watermark = B + 10 * DAY
        assert one(cart(self.START, views=(-600, -1, -1, -1, 0)), final_watermarks=watermark)[
            "cart_abandoned_total"] == 1
        assert one(cart(self.START, views=(-600.001, -1, -1, -1, -1)), final_watermarks=watermark)[
            "cart_abandoned_total"] == 0
        assert one(cart(self.START, views=(-4, -3, -2, -1)), final_watermarks=watermark)[
            "cart_abandoned_total"] == 0

    def test_views_after_the_add_in_the_timeline_do_not_count(self) -> None:
        """A view at the add's timestamp counts only if its messageId sorts first."""
        watermark = B + 10 * DAY
        before = [ev(VIEW, self.START - s) for s in (4, 3, 2, 1)]
        tied_first = [*before, ev(VIEW, self.START, mid="a"), ev(ADD, self.START, mid="b")]
        tied_after = [*before, ev(VIEW, self.START, mid="c"), ev(ADD, self.START, mid="b")]
        assert one(tied_first, final_watermarks=watermark)["cart_abandoned_total"] == 1
        assert one(tied_after, final_watermarks=watermark)["cart_abandoned_total"] == 0

    def test_cancelled_by_a_purchase_up_to_the_deadline(self) -> None:
        events = [*cart(self.START), ev(ORDER, self.DEADLINE)]  # exactly at the deadline: before it fires
        features = one(events, final_watermarks=B + 10 * DAY)
        assert features["cart_abandoned_total"] == 0
        assert "cart_abandoner" not in features["segments"]  # type: ignore[operator]

    def test_leaves_on_the_next_purchase(self) -> None:
        events = [*cart(self.START), ev(ORDER, self.DEADLINE + 0.001)]  # the timer fired just before
        features = one(events, final_watermarks=B + 10 * DAY)
        assert features["cart_abandoned_total"] == 1
        assert "cart_abandoner" not in features["segments"]  # type: ignore[operator]

    def test_a_purchase_after_an_unfired_deadline_cancels(self) -> None:
        """The watermark never passed the deadline, so the later purchase came first."""
        events = [*cart(self.START), ev(ORDER, self.DEADLINE + 5)]
        assert one(events, final_watermarks=B + self.DEADLINE)["cart_abandoned_total"] == 0
        # Had the watermark passed the deadline, the timer fired before the purchase, which then left.
        features = one(events, final_watermarks=B + self.DEADLINE + 1)
        assert features["cart_abandoned_total"] == 1
        assert "cart_abandoner" not in features["segments"]  # type: ignore[operator]

    def test_fires_once_and_rearms_only_after_leaving(self) -> None:
        events = [
            *cart(self.START),
            *cart(self.START + 200),  # armed already: the deadline does not move
            *cart(self.START + 2 * DAY),  # a member: not armed again
        ]
        features = one(events, final_watermarks=B + self.DEADLINE + 50)  # before a moved deadline
        assert features["cart_abandoned_total"] == 1
        assert "cart_abandoner" in features["segments"]  # type: ignore[operator]
        assert one(events, final_watermarks=B + 10 * DAY)["cart_abandoned_total"] == 1
        again = [*events, ev(ORDER, self.START + 3 * DAY), *cart(self.START + 4 * DAY)]
        assert one(again, final_watermarks=B + 10 * DAY)["cart_abandoned_total"] == 2
        assert one(again, final_watermarks=B + 5 * DAY)["cart_abandoned_total"] == 1


class TestTimeline:
    def test_equal_timestamps_ordered_by_message_id(self) -> None:
        events = [
            ev("identify", 5, mid="b", traits={"plan": "late"}, context={"device": {"type": "tv"},
                                                                         "campaign": {"source": "second"}}),
            ev("identify", 5, mid="a", traits={"plan": "early"}, context={"device": {"type": "car"},
                                                                          "campaign": {"source": "first"}}),
            ev("page", 5, mid="", context={"campaign": {"source": "zeroth"}}),
        ]
        features = one(events)
        assert features["traits"] == {"plan": "late"}
        assert (features["device"], features["channel"]) == ("tv", "zeroth")
        del events[2]["messageId"]  # absent sorts as ""
        assert one(events)["channel"] == "zeroth"

    def test_journey(self) -> None:
        assert one([ev("identify", 0), ev("page", 1)])["journey"] == "awareness"
        steps = [ev("page", 0), ev(VIEW, 1), ev(ORDER, 2)]
        assert one(steps[:2])["journey"] == "consideration"
        assert one(steps)["journey"] == "decision"
        assert one([*steps, ev(ORDER, 3)])["journey"] == "retention"
        assert one([ev(ORDER, 0), ev(ORDER, 1)])["journey"] == "retention"  # second purchase counts
        assert one([ev(CHECKOUT, 0), ev(VIEW, 1)])["journey"] == "decision"  # no way back


def test_generated_log_fast_and_exercises_the_cart_trigger() -> None:
    """150k events take well under 20 s, and the generator's users do abandon carts."""
    from segstream.tools.generate import generate  # noqa: PLC0415

    parser = EventParser()
    lines = generate(users=5000, events=150_000, seed=7).lines
    docs = [orjson.loads(line) for line in lines if isinstance(parser.parse(line), Event)]
    newest = max(parse_timestamp(doc["timestamp"]) or 0.0 for doc in docs)
    started = time.perf_counter()
    users = recompute(docs, final_watermarks=newest - 60)
    assert time.perf_counter() - started < 20
    assert sum(int(f["events_total"]) for f in users.values()) == len(docs)  # type: ignore[call-overload]
    assert sum(f["cart_abandoned_total"] > 0 for f in users.values()) >= 20  # type: ignore[operator]
