"""The timeline step: sessions, engagement, context, traits, completeness, the cart trigger."""

from __future__ import annotations

import math
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st
from segstream.operators.features import (
    CartTrigger,
    FeatureConfig,
    apply_fact,
    apply_late,
    completeness,
    expression_values,
    features,
    stamp_event,
)
from segstream.operators.events import Event
from segstream.operators.parse import EventParser
from segstream.operators.segments import default_segments
from segstream.operators.windows import WindowLayout
from segstream.state.profile import Fact, Profile

CONFIG = FeatureConfig()


def fact(ts: float, role: str | None = None, *, mid: str = "m", call: str = "track",
         revenue: float = 0.0, device: str | None = None, country: str | None = None,
         channel: str | None = None, traits: dict | None = None) -> Fact:
    return Fact(ts, mid, role, revenue, call, device, country, channel, traits)


def profile_of(*facts: Fact, config: FeatureConfig = CONFIG) -> Profile:
    profile = Profile()
    for f in facts:
        apply_fact(profile, f, config)
    return profile


def test_sessions_bounces_and_lengths() -> None:
    """Three sessions (gap > 30 min): one bounce finished, the current one of 2 events."""
    p = profile_of(fact(0), fact(4000), fact(4100), fact(4200), fact(9000), fact(9060))
    values = features(p, CONFIG)
    assert (values["sessions_total"], values["session_events"], values["session_length_s"]) == (3, 2, 60.0)
    assert values["bounce_rate"] == 1 / 3
    assert values["events_per_session"] == 2.0


def test_a_gap_of_exactly_the_session_gap_stays_in_the_session() -> None:
    assert features(profile_of(fact(0), fact(1800)), CONFIG)["sessions_total"] == 1
    assert features(profile_of(fact(0), fact(1800.001)), CONFIG)["sessions_total"] == 2


def test_engagement_decays_by_half_life_and_weighs_roles() -> None:
    """A purchase (10) a half-life before a view (1): 10 / 2 + 1; identify weighs nothing."""
    week = CONFIG.engagement_half_life_s
    p = profile_of(fact(0, "purchase"), fact(week, "product_view"), fact(week, call="identify"))
    assert math.isclose(features(p, CONFIG)["engagement"], 6.0, rel_tol=1e-12)
    assert math.isclose(features(p, CONFIG, at=2 * week)["engagement"], 3.0, rel_tol=1e-12)


def test_context_latest_device_country_and_first_touch_channel() -> None:
    p = profile_of(fact(1, device="mobile", channel="ads"), fact(2, country="DE"),
                   fact(3, device="desktop", channel="email"))
    values = features(p, CONFIG)
    assert (values["device"], values["country"], values["channel"]) == ("desktop", "DE", "ads")


def test_traits_merge_later_wins_and_is_bounded() -> None:
    config = FeatureConfig(max_traits=2)
    p = profile_of(fact(1, traits={"email": "a@x", "plan": "free"}),
                   fact(2, traits={"plan": "pro", "name": "Ann"}), config=config)
    assert p.traits == {"email": "a@x", "plan": "pro"}  # a third key does not fit


def test_an_event_goes_to_its_user_as_its_fact_not_its_payload() -> None:
    """In a cluster half the events cross processes: only what the timeline keeps is pickled."""
    raw = (b'{"type":"identify","userId":"u1","messageId":"m1","timestamp":"2024-05-01T10:00:00Z",'
           b'"traits":{"email":"a@x","plan":"pro","bio":"' + b"x" * 2000 + b'"},'
           b'"context":{"device":{"type":"mobile"},"page":{"url":"https://x/' + b"p" * 500 + b'"}}}')
    event = EventParser().parse(raw)
    assert isinstance(event, Event)
    stamped = stamp_event(event, 5.0, "clicks:0", FeatureConfig(max_traits=2))
    assert (stamped.key, stamped.watermark, stamped.clock) == ("u1", 5.0, "clicks:0")
    assert stamped.fact.device == "mobile"
    assert stamped.fact.traits is not None and len(stamped.fact.traits) == 2
    assert pickle.loads(pickle.dumps(stamped)) == stamped
    assert len(pickle.dumps(stamped)) < len(pickle.dumps(event)) - 500  # the page URL stays behind


def needs_enrichment(profile: Profile) -> bool:
    """Whether the default file's needs_enrichment rule takes the user in."""
    [rule] = [r for r in default_segments().rules.rules if r.name == "needs_enrichment"]
    return rule.enters(expression_values(profile, CONFIG), None)


def test_completeness_reads_traits_then_context() -> None:
    p = profile_of(fact(1, traits={"email": "a@x"}))
    assert completeness(p, ("email", "country")) == 0.5
    assert needs_enrichment(p)
    p = profile_of(fact(1, traits={"email": "a@x"}, country="FR"))
    assert completeness(p, ("email", "country")) == 1.0
    assert not needs_enrichment(p)
    assert completeness(p, ()) == 1.0


def test_purchase_features_and_aov() -> None:
    p = profile_of(fact(0, "purchase", revenue=30.0), fact(86400 * 40, "purchase", revenue=10.0),
                   fact(86400 * 40 + 60, "page_view"))
    values = features(p, CONFIG)
    assert (values["purchases_30d"], values["purchases_90d"]) == (1, 2)
    assert (values["revenue_30d"], values["revenue_90d"], values["aov_90d"]) == (10.0, 40.0, 20.0)
    assert values["since_last_purchase_s"] == 60.0


def test_late_events_touch_aggregates_only() -> None:
    p = profile_of(fact(100_000, "page_view", device="mobile"))
    apply_late(p, fact(50_000, "purchase", revenue=5.0, device="tv"), CONFIG)
    values = features(p, CONFIG)
    assert (values["events_total"], values["late_total"], values["purchases_total"]) == (2, 1, 1)
    assert (values["first_seen"], values["last_seen"], values["device"]) == (50_000, 100_000, "mobile")
    assert (values["purchase_1h"], values["purchase_7d"], values["sessions_total"]) == (0, 1, 1)


def test_cart_trigger_arms_on_views_within_the_window() -> None:
    cart = CartTrigger(views=3, views_within_s=100, no_purchase_for_s=50)
    config = FeatureConfig(cart=cart)
    views = [fact(t, "product_view", mid=f"v{t}") for t in (0, 40, 90)]
    armed = profile_of(*views, fact(100, "add_to_cart"), config=config)
    assert armed.cart_deadline == 150
    too_old = profile_of(*views, fact(101, "add_to_cart"), config=config)  # first view 101 s back
    assert too_old.cart_deadline is None
    bought = profile_of(*views, fact(100, "add_to_cart"), fact(150, "purchase"), config=config)
    assert bought.cart_deadline is None  # a purchase at the deadline still cancels
    late_buy = profile_of(*views, fact(100, "add_to_cart"), fact(151, "purchase"), config=config)
    assert late_buy.cart_deadline == 150  # after the deadline: the timer fires first


ROLES = (None, "product_view", "search", "add_to_cart", "checkout", "purchase", "page_view")


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0, 120 * 86400), st.sampled_from(ROLES), st.floats(0, 500),
                  st.sampled_from((None, {"email": "a@x"}, {"plan": 3}))),
        max_size=30),
    later=st.floats(0, 100 * 86400),
    first_read=st.sampled_from(("revenue_90d", "aov_90d", "sessions_7d", "rfm", "traits.plan")),
)
def test_expression_values_read_one_name_as_the_whole_vector_has_it(
        events: list, later: float, first_read: str) -> None:
    """Whatever is read first, every name equals :func:`features` (plus traits, phase, models)."""
    config = FeatureConfig(windows=WindowLayout.build(("15m", "1h", "7d", "30d")))
    p = profile_of(*(fact(ts, role, revenue=revenue if role == "purchase" else 0.0, traits=traits)
                     for ts, role, revenue, traits in sorted(events, key=lambda e: e[0])),
                   config=config)
    at = None if p.last_seen is None else p.last_seen + later
    whole = features(p, config, at)
    traits = whole.pop("traits")
    lazy = expression_values(p, config, at)
    lazy.get(first_read)
    for name, value in whole.items():
        assert lazy.get(name) == value, name
        assert type(lazy.get(name)) is type(value), name
    for name, value in traits.items():
        assert lazy.get(f"traits.{name}") == value
    assert lazy.get("journey") == p.journey and lazy.get("rfm") == ""
    assert dict(lazy).keys() >= whole.keys()
