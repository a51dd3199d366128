"""The timeline step: apply one event to a user's :class:`Profile`, and read features off it.

Events are applied in timeline order ``(timestamp, messageId)``; the user step
(``operators/user.py``) guarantees that order whatever the arrival order, within
the allowed lateness. Every definition here is the contract of
``docs/features.md``, which the oracle test recomputes in batch.

>>> from segstream.operators.parse import EventParser
>>> config = FeatureConfig()
>>> profile = Profile()
>>> raw = (b'{"event":"Product Viewed","userId":"u1","timestamp":"2024-05-01T10:00:00Z",'
...        b'"context":{"device":{"type":"mobile"}}}')
>>> steps = apply_fact(profile, fact_of(EventParser().parse(raw), config), config)
>>> [(step.phase, step.rule) for step in steps]
[('awareness', 'start'), ('consideration', 'awareness->consideration')]
>>> values = features(profile, config)
>>> values["sessions_total"], values["product_view_1h"], values["device"], values["engagement"]
(1, 1, 'mobile', 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from segstream.operators.event_time import Stamped
from segstream.operators.events import Event
from segstream.operators.expressions import BOOL, NUMBER, STRING
from segstream.operators.journey import DEFAULT_JOURNEY, JourneyConfig
from segstream.operators.population import Population
from segstream.operators.rechecks import DECAY, LINEAR, step
from segstream.operators.rfm import RFM_NAMES, rfm_values
from segstream.operators.windows import (
    DAY_WINDOWS,
    REVENUE,
    ROLE_SLOTS,
    SESSION,
    SESSION_SLOT,
    WINDOW_ROLES,
    WindowLayout,
    WindowSpec,
)
from segstream.state.profile import Fact, Profile, TraitValue

DEFAULT_HORIZONS: tuple[str, ...] = ("1h", "24h", "7d", "30d")
"""Rolling-count horizons unless configured (``window_horizons``)."""

DEFAULT_ENGAGEMENT_WEIGHTS: Mapping[str, float] = {
    "page_view": 1.0, "product_view": 1.0, "search": 1.0, "add_to_cart": 3.0,
    "checkout": 5.0, "purchase": 10.0, "signup": 2.0,
}
"""Engagement weight per role; an event without a role weighs :data:`NO_ROLE_WEIGHT`."""

NO_ROLE_WEIGHT = 1.0
SILENT_CALLS = frozenset({"identify", "alias"})
"""Calls that say who someone is, not what they do: engagement weight 0."""

MAX_TRAIT_CHARS = 200
CONTEXT_ATTRIBUTES = ("device", "country", "channel")
"""Profile context fields that ``required_attributes`` may name besides traits."""

PURCHASE_SLOT = ROLE_SLOTS["purchase"]
TIMESTAMP_FEATURES = frozenset({"first_seen", "last_seen", "last_purchase"})
"""Features that are epoch times (ISO strings in Redis, binned by the hour in the population)."""


JOURNEY_TIMER_CAUSE = "timer:journey"
"""The ``cause`` of inactivity transitions."""


class JourneyStep(NamedTuple):
    """One journey transition an event (or the inactivity before it) made.

    Attributes:
        phase: the phase entered.
        rule: the transition's name (``start`` for the initial phase).
        at: event time it happened at (the deadline, for inactivity).
        cause: what caused it, if not the event (``timer:journey``).

    """

    phase: str
    rule: str
    at: float
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class CartTrigger:
    """The cart-abandonment trigger (``[triggers.cart_abandoner]`` in the segments file).

    Attributes:
        views: product views needed in ``views_within_s`` up to a cart add to arm it.
        views_within_s: that window, seconds.
        no_purchase_for_s: the timer: seconds after the cart add without a purchase.

    """

    views: int = 5
    views_within_s: float = 600.0
    no_purchase_for_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Settings of the timeline step and the feature read-out."""

    session_gap_s: float = 1800.0
    windows: WindowLayout = field(default_factory=lambda: WindowLayout.build(DEFAULT_HORIZONS))
    engagement_half_life_s: float = 7 * 86400.0
    engagement_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ENGAGEMENT_WEIGHTS)
    )
    required_attributes: tuple[str, ...] = ("email", "country")
    max_traits: int = 32
    cart: CartTrigger = field(default_factory=CartTrigger)
    journey: JourneyConfig = field(
        default_factory=lambda: JourneyConfig.from_dict(DEFAULT_JOURNEY, schema=expression_schema())
    )

    def weight(self, fact: Fact) -> float:
        """Engagement weight of one event."""
        if fact.call in SILENT_CALLS:
            return 0.0
        if fact.role is None:
            return NO_ROLE_WEIGHT
        return self.engagement_weights.get(fact.role, NO_ROLE_WEIGHT)


def fact_of(event: Event, config: FeatureConfig) -> Fact:
    """Copy what the timeline needs out of an event (no dict of the event is kept)."""
    context = event.context
    traits = _scalar_traits(event.traits, config.max_traits) if event.traits else None
    return Fact(
        event.timestamp, event.message_id, event.role, event.revenue, event.type,
        _text(context, "device", "type"), _text(context, "location", "country"),
        _text(context, "campaign", "source"), traits,
    )


def stamp_event(event: Event, watermark: float, clock: str,
                config: FeatureConfig | None = None) -> Stamped:
    """Return what the parse step sends the user step for ``event``.

    ``watermark``: its partition's watermark just before it; ``clock``: the
    partition; ``config``: the features' settings (default ones if ``None``).
    """
    if config is None:
        config = _default_features()
    return Stamped(event.key, fact_of(event, config), watermark, clock)


@cache
def _default_features() -> FeatureConfig:
    return FeatureConfig()


def starts_session(profile: Profile, ts: float, config: FeatureConfig) -> bool:
    """Return whether an event at ``ts`` opens a new session.

    It does when the gap since ``last_seen`` exceeds ``session_gap_s``, or it is the first event.
    """
    return profile.last_seen is None or ts - profile.last_seen > config.session_gap_s


def apply_fact(profile: Profile, fact: Fact, config: FeatureConfig) -> list[JourneyStep]:
    """Apply one on-time event, in timeline order; return the journey steps it took.

    The first event of a user enters the initial phase with transition
    ``"start"``; an inactivity transition due before the event comes first.
    """
    ts = fact.ts
    previous = profile.last_seen
    profile.events_total += 1
    profile.on_time_total += 1
    if profile.first_seen is None or ts < profile.first_seen:
        profile.first_seen = ts

    weight = config.weight(fact)
    if starts_session(profile, ts, config):
        if profile.session_events == 1:
            profile.bounces += 1
        profile.sessions_total += 1
        profile.session_start = ts
        profile.session_events = 1
        if not profile.buckets:
            profile.buckets = config.windows.empty()
        config.windows.add(profile.buckets, ts, SESSION, 0.0)
    else:
        profile.session_events += 1
    if previous is None:
        profile.engagement = weight
    else:
        decay = 2.0 ** (-(ts - previous) / config.engagement_half_life_s)
        profile.engagement = profile.engagement * decay + weight
    profile.last_seen = ts
    if profile.last_active is not None and profile.last_active <= ts:
        profile.last_active = None  # the same as last_seen again

    role = fact.role
    if role == "purchase":
        profile.purchases_total += 1
        profile.revenue_total += fact.revenue
        profile.last_purchase = ts
    if role in ROLE_SLOTS:
        if not profile.buckets:
            profile.buckets = config.windows.empty()
        config.windows.add(profile.buckets, ts, role, fact.revenue)

    if fact.device is not None:
        profile.device = fact.device
    if fact.country is not None:
        profile.country = fact.country
    if profile.channel is None and fact.channel is not None:
        profile.channel = fact.channel
    if fact.traits:
        _merge_traits(profile.traits, fact.traits, config.max_traits)

    _cart_step(profile, fact, config.cart)
    return _journey_step(profile, role, ts, previous, config)


def apply_late(profile: Profile, fact: Fact, config: FeatureConfig) -> None:
    """Apply a late event (policy ``apply``): order-independent aggregates only."""
    profile.events_total += 1
    profile.late_total += 1
    if profile.first_seen is None or fact.ts < profile.first_seen:
        profile.first_seen = fact.ts
    newest = profile.last_seen if profile.last_active is None else profile.last_active
    if newest is None or fact.ts > newest:
        profile.last_active = fact.ts
    if fact.role == "purchase":
        profile.purchases_total += 1
        profile.revenue_total += fact.revenue
    if fact.role in ROLE_SLOTS:
        if not profile.buckets:
            profile.buckets = config.windows.empty()
        config.windows.add(profile.buckets, fact.ts, fact.role, fact.revenue, coarsest_only=True)


def fire_cart_timer(profile: Profile) -> None:
    """Enter ``cart_abandoner``: the deadline passed without a purchase."""
    profile.cart_deadline = None
    profile.cart_member = True
    profile.cart_abandoned_total += 1


def completeness(profile: Profile, required: tuple[str, ...]) -> float:
    """Share of ``required`` attributes the profile has (traits, then context fields).

    >>> completeness(Profile(traits={"email": "a@b.c"}), ("email", "country"))
    0.5
    """
    if not required:
        return 1.0
    present = sum(
        1 for name in required
        if name in profile.traits
        or (name in CONTEXT_ATTRIBUTES and getattr(profile, name) is not None)
    )
    return present / len(required)


def features(profile: Profile, config: FeatureConfig, at: float | None = None) -> dict[str, Any]:
    """Every feature of ``docs/features.md``, taken at time ``at`` (default ``last_seen``).

    Counts are ints, amounts and times floats, absent values ``None``; ``traits``
    is a dict. This is the vector the model step reads and the source of the
    Redis profile. :class:`ExpressionValues` reads the same features one name
    at a time.
    """
    at = profile.last_seen if at is None else at
    values: dict[str, Any] = {name: read(profile, config, at) for name, read in _HEAD.items()}
    layout = config.windows
    role_names, fm_names = _window_names(layout)
    if profile.buckets and at is not None:
        sums = layout.sums(profile.buckets, at)
        for names, sum_ in zip(role_names, sums, strict=False):
            for name, slot in names:
                values[name] = int(sum_[slot])
        for (purchases, revenue), sum_ in zip(fm_names, sums[len(role_names):], strict=True):
            values[purchases] = int(sum_[PURCHASE_SLOT])
            values[revenue] = sum_[REVENUE]
    else:
        for names in role_names:
            for name, _slot in names:
                values[name] = 0
        for purchases, revenue in fm_names:
            values[purchases] = 0
            values[revenue] = 0.0
    values["aov_90d"] = _aov(values)
    values.update((name, read(profile, config, at)) for name, read in _TAIL.items())
    return values


_Reader = Callable[[Profile, "FeatureConfig", "float | None"], Any]

_HEAD: dict[str, _Reader] = {
    "events_total": lambda p, c, at: p.events_total,
    "late_total": lambda p, c, at: p.late_total,
    "first_seen": lambda p, c, at: p.first_seen,
    "last_seen": lambda p, c, at: p.last_seen,
    "sessions_total": lambda p, c, at: p.sessions_total,
    "session_events": lambda p, c, at: p.session_events,
    "session_length_s": lambda p, c, at: (
        0.0 if p.session_start is None or p.last_seen is None else p.last_seen - p.session_start
    ),
    "events_per_session": lambda p, c, at: _ratio(p.on_time_total, p.sessions_total),
    "bounce_rate": lambda p, c, at: _ratio(
        p.bounces + (1 if p.session_events == 1 else 0), p.sessions_total
    ),
    "purchases_total": lambda p, c, at: p.purchases_total,
    "revenue_total": lambda p, c, at: p.revenue_total,
}
"""The features before the windows (in :func:`features`' order), one reader each."""

_TAIL: dict[str, _Reader] = {
    "last_purchase": lambda p, c, at: p.last_purchase,
    "since_last_purchase_s": lambda p, c, at: (
        None if p.last_purchase is None or at is None else at - p.last_purchase
    ),
    "since_last_seen_s": lambda p, c, at: (
        None if at is None or p.last_seen is None else at - p.last_seen
    ),
    "age_s": lambda p, c, at: None if at is None or p.first_seen is None else at - p.first_seen,
    "engagement": lambda p, c, at: (
        p.engagement if at is None or p.last_seen is None or at == p.last_seen
        else p.engagement * 2.0 ** (-(at - p.last_seen) / c.engagement_half_life_s)
    ),
    "device": lambda p, c, at: p.device,
    "country": lambda p, c, at: p.country,
    "channel": lambda p, c, at: p.channel,
    "traits": lambda p, c, at: dict(p.traits),
    "completeness": lambda p, c, at: completeness(p, c.required_attributes),
    "cart_abandoned_total": lambda p, c, at: p.cart_abandoned_total,
    "cart_abandoned": lambda p, c, at: p.cart_member,
}
"""The features after the windows and ``aov_90d``, one reader each."""

_MODEL_OUTPUTS: dict[str, Callable[[Profile], Any]] = {
    "journey": lambda p: p.journey,
    "cluster": lambda p: p.cluster,
    "churn_p": lambda p: p.churn_p,
    "churn_band": lambda p: p.churn_band,
}
"""What expressions read besides the features: the phase and the model outputs."""


def _aov(values: Mapping[str, Any]) -> float:
    return _ratio(values.get("revenue_90d") or 0.0, values.get("purchases_90d") or 0)


_NAMES: dict[tuple[str, ...], tuple[Any, Any]] = {}


def _window_names(
    layout: WindowLayout,
) -> tuple[tuple[tuple[tuple[str, int], ...], ...], tuple[tuple[str, str], ...]]:
    """Feature names of the windows: ``(name, bucket slot)`` per horizon, and the F/M pairs."""
    key = tuple(spec.name for spec in layout.horizons)
    cached = _NAMES.get(key)
    if cached is not None:
        return cached
    roles = tuple(
        (*((f"{role}_{spec.name}", ROLE_SLOTS[role]) for role in WINDOW_ROLES),
         (f"sessions_{spec.name}", SESSION_SLOT))
        for spec in layout.horizons
    )
    fm = tuple((f"purchases_{spec.name}", f"revenue_{spec.name}") for spec in DAY_WINDOWS)
    _NAMES[key] = (roles, fm)
    return roles, fm


_READERS: dict[int, tuple[WindowLayout, dict[str, _Reader]]] = {}
_MAX_LAYOUTS = 16


def _readers(layout: WindowLayout) -> dict[str, _Reader]:
    """Return a reader per feature name (not traits) for windows laid out as ``layout``."""
    cached = _READERS.get(id(layout))
    if cached is not None and cached[0] is layout:
        return cached[1]
    readers = dict(_HEAD)
    roles, fm = _window_names(layout)
    for spec, names in zip(layout.horizons, roles, strict=True):
        readers.update((name, _window_reader(layout, spec, slot, True)) for name, slot in names)
    for spec, (purchases, revenue) in zip(DAY_WINDOWS, fm, strict=True):
        readers[purchases] = _window_reader(layout, spec, PURCHASE_SLOT, True)
        readers[revenue] = _window_reader(layout, spec, REVENUE, False)
    readers.update(_TAIL)
    del readers["traits"]
    if len(_READERS) >= _MAX_LAYOUTS:  # a process uses one layout; tests build many
        _READERS.clear()
    _READERS[id(layout)] = (layout, readers)  # the layout is kept, so its id is never reused
    return readers


def _window_reader(layout: WindowLayout, spec: WindowSpec, slot: int, count: bool) -> _Reader:
    def read(profile: Profile, config: FeatureConfig, at: float | None) -> Any:
        if not profile.buckets or at is None:
            return 0 if count else 0.0
        total = layout.total(profile.buckets, spec, at, slot)
        return int(total) if count else total
    return read


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _text(context: Mapping[str, Any], outer: str, inner: str) -> str | None:
    holder = context.get(outer)
    if not isinstance(holder, dict):
        return None
    value = holder.get(inner)
    return value if isinstance(value, str) and value else None


def _scalar_traits(traits: Mapping[str, Any], limit: int) -> dict[str, TraitValue] | None:
    kept: dict[str, TraitValue] = {}
    for name, value in traits.items():
        if isinstance(value, str):
            kept[name] = value[:MAX_TRAIT_CHARS]
        elif isinstance(value, bool | int | float):
            kept[name] = value
        if len(kept) >= limit:
            break
    return kept or None


def _merge_traits(
    traits: dict[str, TraitValue], new: Mapping[str, TraitValue], limit: int
) -> None:
    for name, value in new.items():
        if name in traits or len(traits) < limit:
            traits[name] = value


def _cart_step(profile: Profile, fact: Fact, cart: CartTrigger) -> None:
    role = fact.role
    ts = fact.ts
    if role == "product_view":
        views = profile.recent_views
        views.append(ts)
        if len(views) > cart.views:
            del views[: len(views) - cart.views]
    elif role == "purchase":
        if profile.cart_deadline is not None and ts <= profile.cart_deadline:
            profile.cart_deadline = None
        profile.cart_member = False
    elif (
        role == "add_to_cart"
        and profile.cart_deadline is None
        and not profile.cart_member
        and len(profile.recent_views) >= cart.views
        and profile.recent_views[-cart.views] >= ts - cart.views_within_s
    ):
        profile.cart_deadline = ts + cart.no_purchase_for_s


def _journey_step(
    profile: Profile, role: str | None, ts: float, previous: float | None, config: FeatureConfig
) -> list[JourneyStep]:
    """Move the journey for an event at ``ts`` (already applied); ``previous``: the last event before."""
    journey = config.journey
    steps = []
    if profile.journey is None:
        enter_phase(profile, journey.initial, "start", ts)
        steps.append(JourneyStep(journey.initial, "start", ts))
    elif previous is not None:
        # An inactivity transition due before this event happened first, whether
        # or not the watermark fired it: the timeline decides.
        idle = _take_idle(profile, journey, previous, before=ts)
        if idle is not None:
            steps.append(idle)
    phase = profile.journey
    assert phase is not None
    transition = journey.on_event(
        phase, profile.journey_since, role, ts,
        lambda: expression_values(profile, config, ts),
    )
    if transition is not None:
        enter_phase(profile, transition.target, transition.name, ts)
        steps.append(JourneyStep(transition.target, transition.name, ts))
    return steps


def enter_phase(profile: Profile, phase: str, rule: str, at: float) -> None:
    """Put the user in journey ``phase`` at ``at``, by transition ``rule``."""
    profile.journey = phase
    profile.journey_rule = rule
    profile.journey_since = at


def fire_journey_timer(profile: Profile, config: FeatureConfig) -> None:
    """Take the inactivity transition that is due (the watermark passed its deadline)."""
    if profile.last_seen is not None:
        _take_idle(profile, config.journey, profile.last_seen)


def _take_idle(profile: Profile, journey: JourneyConfig, last_seen: float,
               before: float | None = None) -> JourneyStep | None:
    """Take the inactivity transition after ``last_seen``, if one is due (before ``before``)."""
    if profile.journey is None:
        return None
    idle = journey.idle_deadline(profile.journey, profile.journey_since, last_seen)
    if idle is None or (before is not None and idle[0] >= before):
        return None
    deadline, transition = idle
    enter_phase(profile, transition.target, transition.name, deadline)
    return JourneyStep(transition.target, transition.name, deadline, JOURNEY_TIMER_CAUSE)


def expression_schema(
    windows: WindowLayout | None = None, traits: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the names expressions may read, with their types.

    Every numeric feature of :func:`features`, the context strings, the journey
    phase, the model outputs, the RFM score, ``cart_abandoned``, and
    ``traits.<name>`` for each declared trait (``[traits]`` in the segments file).

    >>> schema = expression_schema()
    >>> schema["aov_90d"], schema["device"], schema["cart_abandoned"], schema["rfm_r"]
    ('number', 'string', 'bool', 'number')
    """
    layout = windows if windows is not None else WindowLayout.build(DEFAULT_HORIZONS)
    schema = dict.fromkeys(_numeric_features(layout), NUMBER)
    schema.update(dict.fromkeys(("device", "country", "channel", "journey", "cluster", "churn_band"),
                                STRING))
    schema["churn_p"] = NUMBER
    schema["cart_abandoned"] = BOOL
    schema.update(RFM_NAMES)
    for name, kind in (traits or {}).items():
        schema[f"traits.{name}"] = kind
    return schema


def time_behaviour(windows: WindowLayout) -> dict[str, str]:
    """Return the names whose value changes as time passes with no event, with how.

    One second per second (``since_*``, ``age_s``); by exponential decay
    (``engagement``); or in steps, when a bucket leaves a window (windowed
    counts and sums, ``aov_90d``, the RFM score's frequency and monetary),
    written ``step:<horizon>``.

    >>> moves = time_behaviour(WindowLayout.build(("1h", "7d")))
    >>> moves["age_s"], moves["sessions_7d"], moves["engagement"], "revenue_total" in moves
    ('linear', 'step:7d', 'decay', False)
    """
    roles, fm = _window_names(windows)
    moves = {}
    for spec, horizon in zip(windows.horizons, roles, strict=True):
        moves.update(dict.fromkeys((name for name, _slot in horizon), step(spec.name)))
    for spec, pair in zip(DAY_WINDOWS, fm, strict=True):
        moves.update(dict.fromkeys(pair, step(spec.name)))
    moves.update(dict.fromkeys(("aov_90d", "rfm_f", "rfm_m", "rfm"), step("90d")))
    moves.update(dict.fromkeys(("since_last_purchase_s", "since_last_seen_s", "age_s"), LINEAR))
    moves["engagement"] = DECAY
    return moves


def _numeric_features(layout: WindowLayout) -> list[str]:
    roles, fm = _window_names(layout)
    return [
        "events_total", "late_total", "first_seen", "last_seen", "sessions_total",
        "session_events", "session_length_s", "events_per_session", "bounce_rate",
        "purchases_total", "revenue_total",
        *(name for horizon in roles for name, _slot in horizon),
        *(name for pair in fm for name in pair),
        "aov_90d", "last_purchase", "since_last_purchase_s", "since_last_seen_s", "age_s",
        "engagement", "completeness", "cart_abandoned_total",
    ]


def expression_values(profile: Profile, config: FeatureConfig, at: float | None = None, *,
                      taken: dict[str, Any] | None = None,
                      population: Population | None = None) -> ExpressionValues:
    """Return what expressions read of a profile at time ``at``: features, phase, models, RFM.

    Traits are ``traits.<name>``; the RFM score is against ``population`` (none without one).
    Each name is computed when first read (see :class:`ExpressionValues`).

    ``taken``: the profile's :func:`features` at ``at``, when already computed.
    """
    return ExpressionValues(profile, config, at, taken=taken, population=population)


class ExpressionValues(Mapping[str, Any]):
    """The names expressions read of one profile at one time, each computed on first read.

    Rules are evaluated after every event but read a handful of the ~50
    features; computing only those (a window sum walks one resolution's
    buckets, not every horizon's) is what keeps rule evaluation cheap. The
    values are those of :func:`features`, traits as ``traits.<name>``, the
    phase and model outputs, and the RFM score. Iterating computes everything.

    >>> profile = Profile()
    >>> purchase = Fact(100.0, "m1", "purchase", 25.0, "track", None, None, None, None)
    >>> apply_fact(profile, purchase, FeatureConfig())[0].phase
    'awareness'
    >>> values = ExpressionValues(profile, FeatureConfig())
    >>> values.get("purchases_30d"), values.get("aov_90d"), values.get("traits.email")
    (1, 25.0, None)
    """

    __slots__ = ("_at", "_config", "_known", "_population", "_profile", "_readers")

    def __init__(self, profile: Profile, config: FeatureConfig, at: float | None = None, *,
                 taken: Mapping[str, Any] | None = None,
                 population: Population | None = None) -> None:
        self._profile = profile
        self._config = config
        self._at = profile.last_seen if at is None else at
        self._population = population
        self._readers = _readers(config.windows)
        self._known: dict[str, Any] = {}
        if taken is not None:
            self._known.update(taken)
            for name, value in self._known.pop("traits").items():
                self._known[f"traits.{name}"] = value

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value of ``name`` (``None`` when the profile has none)."""
        known = self._known
        if name in known:
            value = known[name]
        else:
            value = known[name] = self._read(name)
        return default if value is None else value

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        names = [name for name in features(Profile(), self._config) if name != "traits"]
        names.extend(f"traits.{name}" for name in self._profile.traits)
        names.extend(_MODEL_OUTPUTS)
        names.extend(RFM_NAMES)
        return names

    def _read(self, name: str) -> Any:
        profile, config, at = self._profile, self._config, self._at
        read = self._readers.get(name)
        if read is not None:
            return read(profile, config, at)
        if name == "aov_90d":
            return _aov(self)
        if name.startswith("traits."):
            return profile.traits.get(name[len("traits."):])
        output = _MODEL_OUTPUTS.get(name)
        if output is not None:
            return output(profile)
        if name in RFM_NAMES:
            rfm = rfm_values(self._population, self)
            self._known.update(rfm)
            return rfm[name]
        return None
