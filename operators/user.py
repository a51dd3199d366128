"""The per-user step: event time, timers, eviction and the changes they cause.

Keyed by user in the flow. Input is the batch of :class:`Stamped` events and
:class:`Tick` s that arrived for one user; output is :class:`UserUpdate` s (the
Redis profile and the :class:`Change` s to publish), usually one per batch,
two when the user was evicted and came back within it. The Bytewax glue in
``flows/`` is one line per hook.

How event time is kept exact (``docs/features.md``):

1. every item first *advances* the user to its watermark: pending events below
   it move into the settled profile in timeline order, and timers whose
   deadline it passed fire between them, in order;
2. an event then joins the pending events in timeline order, and the *view*
   (settled profile plus pending events) is what gets published. An in-order
   event is applied to the view directly; an out-of-order one rebuilds it.

Changes are the difference between what was last published and the view,
after each event and after each timer. Because a tick only carries a
watermark the user's next event would have brought anyway, a replay at any
speed, with or without ticks, publishes the same changes with the same versions.

At rest a user is its snapshot bytes (about a few hundred bytes), decoded for
the length of a batch: that is what keeps a million idle users small.

>>> from segstream.operators.features import stamp_event
>>> from segstream.operators.parse import EventParser
>>> logic = UserLogic(UserConfig())
>>> raw = b'{"event":"Product Viewed","userId":"u1","timestamp":"2024-05-01T10:00:00Z"}'
>>> [update] = logic.on_items([stamp_event(EventParser().parse(raw), float("-inf"), "clicks:0")])
>>> for c in update.changes:  # versions: 2 journey slots, then one per rule in file order
...     print(c.segment, c.previous, c.version - update.changes[0].version)
journey:awareness None 0
journey:consideration journey:awareness 1
new_user None 7
needs_enrichment None 8
>>> update.profile["events_total"], update.profile["journey"]
('1', 'consideration')
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from segstream.operators.event_time import Stamped, Tick
from segstream.operators.events import Change, iso_utc
from segstream.operators.expressions import Stats
from segstream.operators.features import (
    TIMESTAMP_FEATURES,
    FeatureConfig,
    JourneyStep,
    apply_fact,
    apply_late,
    enter_phase,
    expression_values,
    features,
    fire_cart_timer,
    fire_journey_timer,
    starts_session,
)
from segstream.operators.models import (
    UNASSIGNED,
    LearnItem,
    ModelConfig,
    ModelHub,
    Prediction,
    churn_band,
    churn_vector,
    cluster_vector,
)
from segstream.operators.population import Population
from segstream.operators.rechecks import Clock
from segstream.operators.rfm import rfm_values
from segstream.operators.segments import RuleSet, default_segments
from segstream.state.profile import NO_WATERMARK, Fact, Profile, UserState, exact_json

JOURNEY = "journey"
RULE = "rule"
CLUSTER = "cluster"
CHURN = "churn"
ENTER = "enter"
EXIT = "exit"
CART_TIMER = "cart_abandoner"
EVICT_TIMER = "evict"
SESSION_END_TIMER = "session_end"
CHURN_LABEL_TIMER = "churn_label"
JOURNEY_TIMER = "journey"
RULES_TIMER = "rules"
VERSIONS_PER_SECOND = 1_000_000
"""A new user's first version is its creation time in microseconds (see ``_new_state``)."""


def journey_segment(phase: str) -> str:
    """Segment id of a journey phase (single-valued kinds are qualified by kind).

    >>> journey_segment("decision")
    'journey:decision'
    """
    return f"{JOURNEY}:{phase}"


@dataclass(frozen=True, slots=True)
class UserConfig:
    """Settings of the per-user step.

    Attributes:
        features: the timeline step's settings (sessions, windows, journey...).
        state_ttl_s: event-time idleness after which a user is evicted.
        max_pending_events: pending events kept per user; beyond, the oldest settle early.
        models: when feature snapshots are taken and how churn is labelled and banded.
        hub: the models snapshots are predicted with (``None``: no predictions;
            snapshots and labels are still emitted for a learner).
        rules: the rule segments.
        population: the process's population statistics (``None``: rules that
            read a statistic never hold).

    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    state_ttl_s: float = 90 * 86400.0
    max_pending_events: int = 64
    models: ModelConfig = field(default_factory=ModelConfig)
    hub: ModelHub | None = field(default=None, compare=False)
    rules: RuleSet = field(default_factory=lambda: default_segments().rules)
    population: Population | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class UserUpdate:
    """What one batch did to one user: the Redis profile and the changes to publish.

    Attributes:
        user_id: the user.
        version: the user's version after the batch (Redis never moves it back).
        events_total: events applied so far; orders updates of the same version.
        profile_json: the Redis hash fields (strings), headline features included, as
            one JSON object (``{}`` if evicted): what the Redis script takes, and about
            a quarter of the memory of a dict of strings (an end-of-input settle holds
            every user's update at once).
        changes: membership changes, in version order.
        evicted: the user was evicted: Redis drops their hash and memberships.
        learn: feature snapshots and churn labels for the model learner.

    """

    user_id: str
    version: int
    events_total: int
    profile_json: bytes
    changes: tuple[Change, ...]
    evicted: bool = False
    learn: tuple[LearnItem, ...] = ()

    @property
    def profile(self) -> dict[str, str]:
        """The Redis hash fields, decoded."""
        fields: dict[str, str] = orjson.loads(self.profile_json)
        return fields


class UserLogic:
    """Stateful logic of one user key; holds its state as snapshot bytes between batches."""

    __slots__ = ("config", "data", "timer", "_timer_changed")

    def __init__(self, config: UserConfig, resume: bytes | None = None) -> None:
        """Create the logic of one user key, from its snapshot when resuming."""
        self.config = config
        self.data = resume
        self.timer: tuple[float, str] | None = None
        """Earliest deadline and the partition whose watermark fires it, as of the last
        batch; :meth:`take_timer` hands it over (the flow keeps it in its timer wheel)."""
        self._timer_changed = False
        if resume is not None:
            state = UserState.from_bytes(resume)
            view = _view(state, config)
            self.timer = _next_timer(state, config, view)
            self._timer_changed = True
            population = config.population
            if population is not None:
                if state.contributed_layout != population.layout:
                    # The segments file tracks other features than when the state
                    # was saved: contribute what the user's features say now.
                    state.contributed = None  # never added to this population
                    _contribute(state, population, features(view, config.features))
                    self.data = state.to_bytes()
                elif state.contributed is not None:
                    population.replace(None, tuple(state.contributed))
            self.on_resume(state)

    def on_resume(self, state: UserState) -> None:
        """Take note of the state a resumed user starts from (the flow counts memberships)."""

    @property
    def key(self) -> str | None:
        """The user key (``None`` before the first event).

        Read from the state rather than kept: a million key strings cost 60 MB,
        and the key is only wanted when a timer wakes the user.
        """
        return None if self.data is None else UserState.user_id_of(self.data)

    def on_items(self, items: Iterable[Stamped | Tick]) -> list[UserUpdate]:
        """Apply a batch of one user's events and ticks, in arrival order."""
        run = _Run(self.config, None if self.data is None else UserState.from_bytes(self.data))
        for item in items:
            if isinstance(item, Tick):
                run.advance(item.watermark)
            else:
                run.event(item)
        return self._finish(run)

    def on_watermark(self, watermark: float) -> list[UserUpdate]:
        """Advance to ``watermark`` (end of a bounded input), firing what is due."""
        if self.data is None:
            return []
        run = _Run(self.config, UserState.from_bytes(self.data))
        run.advance(watermark)
        return self._finish(run)

    def take_timer(self) -> tuple[bool, tuple[float, str] | None]:
        """Return ``(changed, timer)`` and forget the timer: the caller keeps it.

        A million users each holding a deadline tuple costs memory that the
        timer wheel already spends, so the logic only carries it until taken.
        """
        timer, changed = self.timer, self._timer_changed
        self.timer, self._timer_changed = None, False
        return changed, timer

    def snapshot(self) -> bytes | None:
        """Return the state for Bytewax recovery (``None`` once evicted)."""
        return self.data

    def _finish(self, run: _Run) -> list[UserUpdate]:
        run.close()
        if run.touched:
            self.data = None if run.state is None else run.state.to_bytes()
            self.timer = (
                None if run.state is None else _next_timer(run.state, self.config, run.view)
            )
            self._timer_changed = True
        return run.updates


def memberships(state: UserState) -> list[tuple[str, str]]:
    """Return a user's published memberships as ``(kind, segment)``.

    >>> memberships(UserState("u1", published_journey="decision", published_segments={"loyal": 0.0}))
    [('journey', 'journey:decision'), ('rule', 'loyal')]
    """
    out = []
    if state.published_journey is not None:
        out.append((JOURNEY, journey_segment(state.published_journey)))
    out.extend((RULE, name) for name in sorted(state.published_segments))
    settled = state.settled
    if settled.cluster is not None:
        out.append((CLUSTER, f"{CLUSTER}:{settled.cluster}"))
    if settled.churn_band is not None:
        out.append((CHURN, f"{CHURN}:{settled.churn_band}"))
    return out


def _next_timer(state: UserState, config: UserConfig, view: Profile | None = None
                ) -> tuple[float, str] | None:
    """Return when to wake the user, and the partition whose watermark decides it.

    That is the earliest deadline of the settled profile or of the view, or the
    newest pending event if earlier. Settling pending events may cancel or move
    a deadline, so the earlier of the two never misses a timer (at worst it
    wakes the user once for nothing). Waking at the newest pending event settles
    a user's final burst: an idle user would otherwise hold it as pending events
    (about 100 bytes each) until eviction.
    """
    if view is None:
        view = _view(state, config)
    dues = [_settled_due(state, config)]
    if view is not state.settled:  # without pending events, the settled deadline is the view's
        dues.append(_due(view, config))
    candidates = [due for due in dues if due]
    if state.pending:
        candidates.append((state.pending[-1].ts, "settle"))
    return (min(candidates)[0], state.clock) if candidates else None


def _view(state: UserState, config: UserConfig) -> Profile:
    """Return the settled profile with the pending events applied (a copy if there are any)."""
    if not state.pending:
        return state.settled
    view = state.settled.copy()
    for fact in state.pending:
        apply_fact(view, fact, config.features)
    return view


def _last_active(profile: Profile) -> float | None:
    """Return the newest event time of the profile's events, late ones included."""
    if profile.last_active is not None:
        return profile.last_active
    return profile.last_seen if profile.last_seen is not None else profile.first_seen


def _due(profile: Profile, config: UserConfig, active_until: float | None = None
         ) -> tuple[float, str] | None:
    """Return the profile's earliest timer as ``(deadline, timer name)``.

    ``active_until``: the user is known to be active then (pending events): no eviction before.
    """
    active = _last_active(profile)
    if active is None:
        return None
    if active_until is not None and active_until > active:
        active = active_until
    due = (active + config.state_ttl_s, EVICT_TIMER)
    if profile.cart_deadline is not None and profile.cart_deadline < due[0]:
        due = (profile.cart_deadline, CART_TIMER)
    if profile.label_at is not None:
        label = profile.label_at + config.models.churn_horizon_s
        if label < due[0]:
            due = (label, CHURN_LABEL_TIMER)
    end = _session_end(profile, config)
    if end is not None and end < due[0]:
        due = (end, SESSION_END_TIMER)
    if profile.journey is not None and profile.last_seen is not None:
        idle = config.features.journey.idle_deadline(profile.journey, profile.journey_since,
                                                      profile.last_seen)
        if idle is not None and idle[0] < due[0]:
            due = (idle[0], JOURNEY_TIMER)
    return due


def _settled_due(state: UserState, config: UserConfig) -> tuple[float, str] | None:
    """Return the earliest timer of the settled state: the profile's, or the rules' re-check.

    Eviction counts idleness from the user's newest event. Late events settle at
    once, out of timeline order: a settled profile of late events only (no
    on-time event has settled yet) is not idle while the user's on-time events
    wait for the watermark, however old the late ones are.
    """
    settled = state.settled
    active_until = (state.pending[-1].ts if state.pending and settled.last_seen is None
                    else None)
    due = _due(settled, config, active_until)
    at = state.recheck_at
    if at is None or not state.published_segments:
        return due
    rules = (at, RULES_TIMER)
    return rules if due is None or rules < due else due


def _session_end(profile: Profile, config: UserConfig) -> float | None:
    """When the current session ends if no event comes (``None``: its snapshot was taken)."""
    if profile.sessions_total <= profile.snapshot_session or profile.last_seen is None:
        return None
    return profile.last_seen + config.features.session_gap_s


class _Run:
    """One batch of one user: the decoded state, the current view, and the output."""

    __slots__ = ("config", "state", "view", "changes", "updates", "touched", "applied", "retired",
                 "learn")

    def __init__(self, config: UserConfig, state: UserState | None) -> None:
        self.config = config
        self.state = state
        self.view: Profile | None = None
        self.changes: list[Change] = []
        self.updates: list[UserUpdate] = []
        self.touched = False  # the state changed: encode it again
        self.applied = False  # an event was applied: publish the profile
        self.retired = 0  # last version of a life evicted in this batch
        self.learn: list[LearnItem] = []  # for the model learner

    # --- the two inputs ---------------------------------------------------------

    def event(self, item: Stamped) -> None:
        fcfg = self.config.features
        fact = item.fact
        if self.state is None:
            self.state = _new_state(item.key, max(fact.ts, item.watermark), self.retired)
        self.advance(item.watermark)
        if self.state is None:  # the watermark evicted the user: this event starts anew
            self.state = _new_state(item.key, max(fact.ts, item.watermark), self.retired)
            self.state.watermark = item.watermark
        state = self.state
        state.clock = item.clock
        self.touched = self.applied = True
        if fact.ts < state.watermark:
            # Late: passed on by the parse step under late_events = "apply", or
            # on time for its partition while this user saw a higher watermark
            # from another one. Either way: the aggregates only.
            apply_late(state.settled, fact, fcfg)
            self._rebuild_view()
            self._publish(fact.message_id, fact.ts)
            return
        pending = state.pending
        if not pending or _order(pending[-1]) <= _order(fact):
            if self.view is None:
                self._rebuild_view(copy=True)
            view = self.view
            assert view is not None
            pending.append(fact)
            before = view.journey
            steps = apply_fact(view, fact, fcfg)
            self._publish(fact.message_id, fact.ts, steps, before)
        else:
            insort(pending, fact, key=_order)
            self._rebuild_view()
            self._publish(fact.message_id, fact.ts)
        if len(pending) > self.config.max_pending_events:
            self._settle_one()

    def advance(self, watermark: float) -> None:
        """Move the user's watermark up: settle events and fire timers below it."""
        state = self.state
        if state is None or watermark <= state.watermark:
            return
        state.watermark = watermark
        self.touched = True
        while True:
            state = self.state
            if state is None:
                return
            due = _settled_due(state, self.config)
            pending = state.pending
            if pending and pending[0].ts < watermark and (due is None or pending[0].ts <= due[0]):
                self._settle_one()
            elif due is not None and due[0] < watermark:
                self._fire(*due)
            else:
                return

    # --- settling and timers ---------------------------------------------------------

    def _settle_one(self) -> None:
        state = self.state
        assert state is not None
        fact = state.pending.pop(0)
        settled = state.settled
        # The model timers belong to the timeline: when the watermark has not
        # fired them (events settled early, see max_pending_events), the event
        # that follows does, so snapshots and labels never depend on it.
        end = _session_end(settled, self.config)
        if end is not None and starts_session(settled, fact.ts, self.config.features):
            self._end_session(end)
        if settled.label_at is not None:
            # The user is back: the last session-end snapshot churned only if the
            # horizon passed first (with the watermark, its timer labels it instead).
            self._label(
                churned=fact.ts > settled.label_at + self.config.models.churn_horizon_s)
        apply_fact(settled, fact, self.config.features)
        settled.since_snapshot += 1
        if not state.pending:
            self.view = None  # the view is the settled profile again
        if settled.since_snapshot >= self.config.models.snapshot_every_events:
            self._snapshot(fact.ts, f"snapshot:{fact.message_id}", session_end=False)

    def _fire(self, deadline: float, timer: str) -> None:
        state = self.state
        assert state is not None
        if timer == CART_TIMER:
            fire_cart_timer(state.settled)
            self.applied = True  # cart_abandoned_total changed, even if no membership did
            self._rebuild_view()
            self._publish(f"timer:{timer}", deadline)
        elif timer == SESSION_END_TIMER:
            self._end_session(deadline)
        elif timer == CHURN_LABEL_TIMER:
            self._label(churned=True)
        elif timer == JOURNEY_TIMER:
            fire_journey_timer(state.settled, self.config.features)
            self._rebuild_view()
            self._publish(f"timer:{timer}", deadline)
        elif timer == RULES_TIMER:
            self._rebuild_view()
            self._publish(f"timer:{timer}", deadline)
        else:
            self._evict(deadline)

    # --- models ----------------------------------------------------------------------

    def _end_session(self, at: float) -> None:
        """Take the session-end snapshot (once per session)."""
        state = self.state
        assert state is not None
        state.settled.snapshot_session = state.settled.sessions_total
        self._snapshot(at, f"timer:{SESSION_END_TIMER}", session_end=True)

    def _snapshot(self, at: float, cause: str, *, session_end: bool) -> None:
        """Take a feature snapshot of the settled profile: predict, publish, pass it on to learn."""
        state = self.state
        assert state is not None
        settled = state.settled
        settled.since_snapshot = 0
        values = features(settled, self.config.features, at)
        cluster_x, churn_x = cluster_vector(values), churn_vector(values)
        hub = self.config.hub
        prediction = Prediction(None, None, 0) if hub is None else hub.predict(cluster_x, churn_x)
        self.learn.append(LearnItem(cluster_x=cluster_x, event_time=at))
        self.touched = True
        settled.model_version = prediction.model_version
        # Every snapshot takes a fixed block of versions, used or not (see
        # _publish): the models' decisions depend on what they learned from other
        # users (and, on a replay after a crash, on timing), so they must not
        # shift the versions of the changes that follow.
        base = state.version
        cluster = UNASSIGNED if prediction.cluster is None else str(prediction.cluster)
        if cluster != settled.cluster:
            self._change(CLUSTER, f"{CLUSTER}:{cluster}", ENTER,
                         None if settled.cluster is None else f"{CLUSTER}:{settled.cluster}",
                         at, cause, CLUSTER, model_version=prediction.model_version)
            settled.cluster = cluster
            self.applied = True
        state.version = base + 1
        p = prediction.churn_p
        if p is not None:
            settled.churn_p = p
            self.applied = True
            band = churn_band(p, settled.churn_band, self.config.models)
            if band != settled.churn_band:
                self._change(CHURN, f"{CHURN}:{band}", ENTER,
                             None if settled.churn_band is None else f"{CHURN}:{settled.churn_band}",
                             at, cause, CHURN, scores={"churn_p": p},
                             model_version=prediction.model_version)
                settled.churn_band = band
        state.version = base + 2
        if session_end:
            settled.label_at, settled.label_p = at, p
        journey = self.config.features.journey
        if journey.reads_models and settled.journey is not None:
            transition = journey.at_snapshot(
                settled.journey, settled.journey_since, at,
                expression_values(settled, self.config.features, at, taken=values,
                                  population=self.config.population),
                self._stats())
            if transition is not None:
                enter_phase(settled, transition.target, transition.name, at)
        if state.pending:
            self._rebuild_view()  # the view carries the new model outputs too
        # The journey and the rules may read what the models just decided.
        self._publish(cause, at, journey_slots=1)

    def _label(self, *, churned: bool) -> None:
        """Learn the pending session-end snapshot as churned or not."""
        state = self.state
        assert state is not None
        settled = state.settled
        at = settled.label_at
        assert at is not None
        values = features(settled, self.config.features, at)
        self.learn.append(LearnItem(churn_x=churn_vector(values), churned=churned,
                                    predicted=settled.label_p, event_time=at))
        settled.label_at = settled.label_p = None
        self.touched = True

    def _evict(self, deadline: float) -> None:
        state = self.state
        assert state is not None
        cause = f"timer:{EVICT_TIMER}"
        settled = state.settled
        # A fixed block of versions, as in _publish: journey, cluster, churn, then one per rule.
        base = state.version
        if state.published_journey is not None:
            self._change(JOURNEY, journey_segment(state.published_journey), EXIT, None,
                         deadline, cause, EVICT_TIMER, version=base + 1)
        if settled.cluster is not None:
            self._change(CLUSTER, f"{CLUSTER}:{settled.cluster}", EXIT, None, deadline, cause,
                         EVICT_TIMER, version=base + 2)
        if settled.churn_band is not None:
            self._change(CHURN, f"{CHURN}:{settled.churn_band}", EXIT, None, deadline, cause,
                         EVICT_TIMER, version=base + 3)
        slots = self.config.rules.names
        for slot, name in enumerate(slots):
            if name in state.published_segments:
                self._change(RULE, name, EXIT, None, deadline, cause, EVICT_TIMER,
                             version=base + 4 + slot)
        state.version = base + 3 + len(slots)
        for name in sorted(set(state.published_segments) - set(slots)):  # rules since removed
            self._change(RULE, name, EXIT, None, deadline, cause, EVICT_TIMER)
        population = self.config.population
        if population is not None:
            population.replace(_tuple(state.contributed), None)
            state.contributed = state.contributed_layout = None
        self.updates.append(UserUpdate(
            state.user_id, state.version, self._current().events_total, b"{}",
            tuple(self.changes), evicted=True,
        ))
        self.changes = []
        self.retired = state.version
        rest = state.pending
        if rest:
            # Events after the deadline start the user's next life, versions continuing.
            fresh = _new_state(state.user_id, deadline, state.version)
            fresh.watermark, fresh.clock, fresh.pending = state.watermark, state.clock, rest
            self.state = fresh
            self._rebuild_view()
            self._publish(rest[-1].message_id, rest[-1].ts)
        else:
            self.state = None
            self.view = None

    # --- publication -------------------------------------------------------------------

    def _current(self) -> Profile:
        state = self.state
        assert state is not None
        if self.view is None and state.pending:
            self._rebuild_view()
        return state.settled if self.view is None else self.view

    def _rebuild_view(self, *, copy: bool = False) -> None:
        """Recompute the view from the settled profile and pending events.

        Without pending events the view is the settled profile itself, unless
        ``copy`` asks for a separate one (an event is about to be applied to it).
        """
        state = self.state
        assert state is not None
        if not state.pending and not copy:
            self.view = None
            return
        view = state.settled.copy()
        for fact in state.pending:
            apply_fact(view, fact, self.config.features)
        self.view = view

    def _publish(
        self, cause: str, event_time: float,
        steps: list[JourneyStep] | None = None, before: str | None = None,
        *, journey_slots: int = 2,
    ) -> None:
        """Publish the difference between the published membership and the view.

        Versions come in a fixed block per call, used or not: ``journey_slots``
        for journey changes (an event takes at most two steps: the initial phase
        or an inactivity transition, then its own), then one per rule, in file
        order. A decision that depends on other users (a population statistic,
        a model output) may differ on a replay after a crash; with fixed slots
        it never shifts the versions of the changes that follow, so consumers
        can keep deduplicating on ``(user_id, version)``.
        """
        state = self.state
        assert state is not None
        self.touched = True
        if self.view is None and state.pending:
            self._rebuild_view()
        view = self._current()
        base = state.version
        if steps and before == state.published_journey:
            previous = before
            first_slot = journey_slots - len(steps)
            for slot, step in enumerate(steps, start=first_slot + 1):
                self._change(JOURNEY, journey_segment(step.phase), ENTER,
                             None if previous is None else journey_segment(previous),
                             step.at, step.cause or cause, step.rule, version=base + slot)
                previous = step.phase
            state.published_journey = view.journey
        elif view.journey != state.published_journey and view.journey is not None:
            previous = state.published_journey
            self._change(JOURNEY, journey_segment(view.journey), ENTER,
                         None if previous is None else journey_segment(previous),
                         event_time, cause, view.journey_rule, version=base + journey_slots)
            state.published_journey = view.journey
        base += journey_slots
        rules = self.config.rules
        if rules.rules:
            at = event_time if view.last_seen is None else max(event_time, view.last_seen)
            values = expression_values(view, self.config.features, at,
                                       population=self.config.population)
            members = state.published_segments
            for slot, name, entered in rules.decide(members, values, self._stats(), at):
                self._change(RULE, name, ENTER if entered else EXIT, None, event_time, cause, name,
                             version=base + 1 + slot)
                if entered:
                    members[name] = at
                else:
                    del members[name]
            features_config = self.config.features
            state.recheck_at = rules.recheck_at(members, values, Clock(
                at, lambda windows: features_config.windows.next_change(view.buckets, at, windows),
                features_config.engagement_half_life_s, rules.recheck_s))
        state.version = base + len(rules.rules)
        known = rules.names
        for name in sorted(set(state.published_segments) - set(known)):
            # A rule removed from the segments file since the user entered it.
            self._change(RULE, name, EXIT, None, event_time, cause, "removed")
            del state.published_segments[name]

    def _stats(self) -> Stats | None:
        population = self.config.population
        return None if population is None else population.stat

    def _change(
        self, kind: str, segment: str, change: str, previous: str | None,
        event_time: float, cause: str, rule: str | None, *,
        scores: dict[str, float] | None = None, model_version: int | None = None,
        version: int | None = None,
    ) -> None:
        """Record a change at ``version`` (default: the next one)."""
        state = self.state
        assert state is not None
        state.version = state.version + 1 if version is None else version
        self.changes.append(Change(
            user_id=state.user_id, kind=kind, segment=segment, change=change,
            previous=previous, event_time=event_time, version=state.version,
            cause=cause, rule=rule, scores=scores, model_version=model_version,
        ))

    def close(self) -> None:
        """Emit the update of the user's current life, if anything happened to it."""
        state = self.state
        if state is None:
            if self.learn and self.updates:  # evicted in this batch: the eviction carries them
                self.updates[-1] = replace(self.updates[-1], learn=tuple(self.learn))
            return
        if not (self.applied or self.changes or self.learn):
            return
        view = self._current()
        values = features(view, self.config.features)
        population = self.config.population
        rfm = ""
        if population is not None:
            if _contribute(state, population, values):
                self.touched = True
            rfm = rfm_values(population, values)["rfm"]
        self.updates.append(UserUpdate(
            state.user_id, state.version, view.events_total,
            exact_json(profile_fields(values, state, view, rfm=rfm)), tuple(self.changes),
            learn=tuple(self.learn),
        ))
        self.changes = []
        self.learn = []


def _tuple(values: list[float | None] | None) -> tuple[float | None, ...] | None:
    return None if values is None else tuple(values)


def _contribute(state: UserState, population: Population, values: dict[str, Any]) -> bool:
    """Make the user's contribution to ``population`` what ``values`` add; return if it changed."""
    found = population.contribution(values)
    contribution = None if found is None else list(found)
    if contribution == state.contributed and state.contributed_layout == population.layout:
        return False
    population.replace(_tuple(state.contributed), found)
    state.contributed = contribution
    state.contributed_layout = population.layout
    return True


def _order(fact: Fact) -> tuple[float, str]:
    return (fact.ts, fact.message_id)


def _new_state(user_id: str, created: float, version: int) -> UserState:
    """Create a state whose versions start above any version of an earlier life.

    An evicted user's state is gone, so the next life cannot continue its
    count; it starts at its creation time in microseconds instead, which is
    above every version of the previous life (that one had fewer changes than
    microseconds of idleness before its eviction).
    """
    base = max(version, int(created * VERSIONS_PER_SECOND)) if created != NO_WATERMARK else version
    return UserState(user_id, version=base)


POPULATION_FIELDS = ("rfm", "cluster", "churn_p", "churn_band", "model_version")
"""Profile fields that depend on the other users too (the RFM population, the shared
models): a user replayed alone has the same profile except these."""


def profile_fields(values: dict[str, Any], state: UserState,
                   view: Profile | None = None, *, rfm: str = "") -> dict[str, str]:
    """Return the Redis profile hash of a user from its :func:`features`.

    ``updated_at`` is the sink's to add; ``rfm`` is the user's RFM score.
    The model outputs (``cluster``, ``churn_p``, ``churn_band``,
    ``model_version``) come from ``view`` (default: the settled profile).

    >>> profile = Profile(events_total=2, first_seen=0.0, last_seen=60.0)
    >>> fields = profile_fields(features(profile, FeatureConfig()), UserState("u1"))
    >>> fields["events_total"], fields["last_seen"], fields["segments"], fields["traits"]
    ('2', '1970-01-01T00:01:00.000Z', '[]', '{}')
    >>> fields["cluster"], fields["churn_p"]
    ('', '')
    """
    models = state.settled if view is None else view
    out = {
        "journey": state.published_journey or "",
        "segments": orjson.dumps(sorted(state.published_segments)).decode(),
        "version": str(state.version),
        "rfm": rfm,
        "cluster": models.cluster or "",
        "churn_p": "" if models.churn_p is None else repr(models.churn_p),
        "churn_band": models.churn_band or "",
        "model_version": str(models.model_version),
    }
    for name, value in values.items():
        if value is None:
            out[name] = ""
        elif name in TIMESTAMP_FEATURES:
            out[name] = iso_utc(value)
        elif value.__class__ is float:
            out[name] = repr(value)
        elif value.__class__ is bool:
            out[name] = "true" if value else "false"
        elif name == "traits":
            out[name] = orjson.dumps(value).decode()
        else:
            out[name] = str(value)
    return out

