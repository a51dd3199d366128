"""The segstream dataflow, wired left to right as in DESIGN.md.

Run it with ``segstream run`` or directly::

    python -m bytewax.run "segstream.flows.segmentation:build_flow()"

Nothing happens at import. Tests pass a ``TestingSource`` of
``KafkaSourceMessage`` s and ``TestingSink`` s.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, Sink
from segstream.flows.connectors import (
    EpochSink,
    KafkaOutSink,
    OutMessage,
    RedisModelSink,
    RedisSink,
    SourceItem,
    kafka_source,
    reject,
)
from segstream.flows.models import (
    LearnerStep,
    learn_items,
    learn_messages,
    model_event_messages,
    read_learn_message,
)
from segstream.flows.timers import ClockSource, WorkerState, WorkerStates
from segstream.operators.changes import change_key, change_value, dead_letter_parts
from segstream.operators.event_time import PartitionWatermark, Stamped, Tick
from segstream.operators.events import Event, Reason, Rejected, iso_utc
from segstream.operators.features import FeatureConfig, stamp_event
from segstream.operators.models import ModelConfig, ModelEvent, ModelHub
from segstream.operators.parse import EventParser
from segstream.operators.population import Population
from segstream.operators.user import UserConfig, UserLogic, UserUpdate, memberships
from segstream.operators.windows import WindowLayout
from segstream.state.profile import UserState

from segstream.config import Config, SegmentsConfig, load_config, load_segments
from segstream.metrics import (
    CHANGES_OUT,
    CONSUMER_LAG_SECONDS,
    DEAD_LETTERS,
    EVENT_TIME_LAG_SECONDS,
    EVENTS_IN,
    EVICTIONS,
    JOURNEY_TRANSITIONS,
    LAST_BATCH_UNIXTIME,
    LATE_EVENTS,
    SEGMENT_MEMBERS,
    USERS_IN_STATE,
)

X = TypeVar("X")


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where the flow writes: Kafka (changes, dead letters, model events) and Redis.

    ``models`` receives the model learner's events for Redis (cluster
    descriptions, the model version); ``None`` writes them nowhere. A
    ``FixedPartitionedSink`` gets its items as ``("", item)``.
    """

    kafka: Sink[OutMessage] | FixedPartitionedSink[OutMessage, Any]
    redis: Sink[UserUpdate] | FixedPartitionedSink[UserUpdate, Any]
    models: Sink[ModelEvent] | FixedPartitionedSink[ModelEvent, Any] | None = None

    @classmethod
    def default(cls, config: Config, *, process_id: int = 0, processes: int = 1) -> Sinks:
        """Kafka and Redis as configured, for process ``process_id`` of ``processes``."""
        where = {"process_id": process_id, "processes": processes}
        return cls(kafka=KafkaOutSink(config, **where), redis=RedisSink(config, **where),
                   models=RedisModelSink(config, **where))

    def epoch_sinks(self) -> list[EpochSink[Any]]:
        """Return the sinks that wait for their writes only at epoch closes."""
        return [s for s in (self.kafka, self.redis, self.models) if isinstance(s, EpochSink)]


def _no_key(_item: object) -> str:
    return ""


def _output(step_id: str, up: Stream[X], sink: Sink[X] | FixedPartitionedSink[X, Any]) -> None:
    """``op.output``; a partitioned sink picks its partition itself, so its items get an unused key."""
    if isinstance(sink, FixedPartitionedSink):
        op.output(step_id, op.key_on(f"{step_id}_key", up, _no_key), sink)
    else:
        op.output(step_id, up, sink)


def partition_of(item: SourceItem) -> str:
    """Return the ``topic:partition`` an input came from (the key of the ``parse`` step)."""
    msg = item.msg if isinstance(item, KafkaError) else item
    return f"{msg.topic}:{msg.partition}"


def parse_batch(
    parser: EventParser, items: list[SourceItem], clock: PartitionWatermark,
    *, late_events: str = "apply", features: FeatureConfig | None = None,
) -> list[Stamped | Rejected]:
    """Parse a batch of one partition's messages, in order, and stamp their watermark.

    Consumer errors become ``source_error`` rejects; late events are
    dead-lettered (``late``) or passed on, by ``late_events``. Valid events go
    on as the user's timeline keeps them (``features``: its settings; default
    ones if ``None``). Metrics are counted in the same pass and recorded once
    per batch.
    """
    out: list[Stamped | Rejected] = []
    parse = parser.parse
    observe = clock.observe
    newest_append_ms = 0
    newest_event = 0.0
    valid = late = 0
    rejected: Counter[str] = Counter()
    read_at = parser.clock()  # what future timestamps are judged by: once per batch
    for item in items:
        if isinstance(item, KafkaError):
            result: Event | Rejected = reject(item, Reason.SOURCE_ERROR, str(item.err))
            source = f"{item.msg.topic}:{item.msg.partition}"
        else:
            result = parse(item.value, key=item.key, topic=item.topic,
                           partition=item.partition, offset=item.offset, now=read_at)
            source = f"{item.topic}:{item.partition}"
            if item.timestamp is not None and item.timestamp[1] > newest_append_ms:
                newest_append_ms = item.timestamp[1]
        if isinstance(result, Event):
            ts = result.timestamp
            watermark = observe(ts)
            if ts > newest_event:
                newest_event = ts
            if ts < watermark:
                late += 1
                if late_events == "dead_letter":
                    result = late_reject(result, watermark, clock.lateness_s, item)
                    rejected[result.reason.value] += 1
                    out.append(result)
                    continue
            valid += 1
            out.append(stamp_event(result, watermark, source, features))
        else:
            rejected[result.reason.value] += 1
            out.append(result)

    now = time.time()
    EVENTS_IN.inc(valid)
    if late:
        LATE_EVENTS.labels(late_events).inc(late)
    for reason, count in rejected.items():
        DEAD_LETTERS.labels(reason).inc(count)
    LAST_BATCH_UNIXTIME.set(now)
    if newest_append_ms:
        CONSUMER_LAG_SECONDS.set(max(0.0, now - newest_append_ms / 1000))
    if newest_event:
        EVENT_TIME_LAG_SECONDS.set(now - newest_event)
    return out


def late_reject(
    event: Event, watermark: float, lateness_s: float, item: SourceItem
) -> Rejected:
    """Build the dead letter of a late event: its original bytes, and by how much it was late."""
    msg = item.msg if isinstance(item, KafkaError) else item
    detail = (
        f"timestamp {iso_utc(event.timestamp)} is {watermark - event.timestamp:.3f} s older "
        f"than the watermark {iso_utc(watermark)} of {msg.topic}:{msg.partition} "
        f"(allowed lateness {lateness_s:g} s)"
    )
    return reject(item, Reason.LATE, detail)


def dead_letter(dlq_topic: str, rejected: Rejected, max_bytes: int) -> OutMessage:
    """Build the dead-letter message: original key and bytes, reason and source in headers.

    Cut to ``max_bytes`` if larger (:func:`~segstream.operators.changes.dead_letter_parts`),
    and best-effort: one that still fails to produce is counted and logged, not fatal.
    """
    key, value, headers = dead_letter_parts(rejected, max_bytes=max_bytes)
    return OutMessage(dlq_topic, key, value, headers, best_effort=True)


def change_messages(output_topic: str, updates: list[UserUpdate]) -> list[OutMessage]:
    """Serialize the changes of a batch of updates for the ``segment-changes`` topic."""
    emitted_at = time.time()
    out = []
    kinds: Counter[str] = Counter()
    members: Counter[tuple[str, str]] = Counter()
    transitions: Counter[tuple[str, str]] = Counter()
    for update in updates:
        for change in update.changes:
            out.append(OutMessage(output_topic, change_key(change),
                                  change_value(change, emitted_at=emitted_at)))
            kind = change.kind
            kinds[kind] += 1
            if change.change == "enter":
                members[kind, change.segment] += 1
                if change.previous is not None:
                    members[kind, change.previous] -= 1
                if kind == "journey":
                    transitions[_phase(change.previous), _phase(change.segment)] += 1
            else:
                members[kind, change.segment] -= 1
    for kind, count in kinds.items():
        CHANGES_OUT.labels(kind).inc(count)
    for (kind, segment), delta in members.items():
        if delta:
            SEGMENT_MEMBERS.labels(kind, segment).inc(delta)
    for (left, entered), count in transitions.items():
        JOURNEY_TRANSITIONS.labels(left, entered).inc(count)
    return out


def _phase(segment: str | None) -> str:
    return "" if segment is None else segment.partition(":")[2]


class _ParseStep(StatefulBatchLogic[SourceItem, "Stamped | Rejected", float]):
    """Bytewax shim: parse one partition's messages in order, keeping its watermark.

    The state is the partition's newest event time, snapshotted with the source
    offsets, so a resumed worker judges lateness exactly as before the crash.
    """

    __slots__ = ("parser", "clock", "late_events", "features")

    def __init__(self, parser: EventParser, clock: PartitionWatermark, late_events: str,
                 features: FeatureConfig) -> None:
        self.parser = parser
        self.clock = clock
        self.late_events = late_events
        self.features = features

    def on_batch(self, values: list[SourceItem]) -> tuple[list[Stamped | Rejected], bool]:
        out = parse_batch(self.parser, values, self.clock, late_events=self.late_events,
                          features=self.features)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> float:
        return self.clock.newest


class _UserStep(UserLogic, StatefulBatchLogic["Stamped | Tick", UserUpdate, bytes]):
    """Bytewax face of :class:`UserLogic`; keeps its worker's timer wheel.

    One object per user, which is also the user's entry in the timer wheel
    (``deadline``, ``clock``): a separate shim, wheel entry and key string cost
    about 250 B per user, a quarter of the per-user budget.
    """

    __slots__ = ("worker", "deadline", "clock")

    def __init__(self, config: UserConfig, resume: bytes | None, worker: WorkerState) -> None:
        self.worker = worker
        self.deadline: float | None = None
        """The registered deadline in the worker's timer wheel (the wheel keeps it)."""
        self.clock = ""
        """The partition whose watermark fires ``deadline`` (the wheel keeps it)."""
        super().__init__(config, resume)
        worker.users_built += 1
        self._schedule()

    def on_resume(self, state: UserState) -> None:
        self.worker.members_resumed.update(memberships(state))

    def on_batch(self, values: list[Stamped | Tick]) -> tuple[list[UserUpdate], bool]:
        worker = self.worker
        if worker.users_built:
            worker.publish_counts()
        observe, lateness = worker.wheel.observe, worker.lateness_s
        for item in values:
            if isinstance(item, Stamped):
                # The partition's watermark after this event.
                observe(item.clock, max(item.watermark, item.fact.ts - lateness))
        return self._done(self.on_items(values))

    def on_eof(self) -> tuple[list[UserUpdate], bool]:
        # End of a bounded input: settle to the latest watermark of the user's
        # partition, so the timers a tailing run would fire fire here too.
        if self.worker.users_built:
            self.worker.publish_counts()
        if self.deadline is None:
            return [], StatefulBatchLogic.RETAIN
        watermark = self.worker.wheel.watermarks.get(self.clock)
        if watermark is None or watermark <= self.deadline:
            return [], StatefulBatchLogic.RETAIN
        return self._done(self.on_watermark(watermark))

    def snapshot(self) -> bytes:
        snap = UserLogic.snapshot(self)
        assert snap is not None, "an evicted user's logic is discarded, never snapshotted"
        return snap

    def _done(self, updates: list[UserUpdate]) -> tuple[list[UserUpdate], bool]:
        for update in updates:
            if update.evicted:
                EVICTIONS.inc()
        self._schedule()
        if self.data is None:
            USERS_IN_STATE.dec()
            return updates, StatefulBatchLogic.DISCARD
        return updates, StatefulBatchLogic.RETAIN

    def _schedule(self) -> None:
        changed, timer = self.take_timer()
        if not changed:
            return
        if timer is None or self.data is None:
            self.worker.wheel.schedule(self, "", None)
        else:
            self.worker.wheel.schedule(self, timer[1], timer[0])


def event_parser(config: Config) -> EventParser:
    """Build the parse step's validator from the worker config."""
    return EventParser(taxonomy=config.taxonomy, max_event_bytes=config.max_event_bytes,
                       max_revenue=config.max_revenue, max_price=config.max_price,
                       max_quantity=config.max_quantity, max_future_skew_s=config.max_future_skew_s,
                       min_event_time=config.min_event_time_s)


def model_config(config: Config) -> ModelConfig:
    """Build the models' settings from the worker config."""
    return ModelConfig(
        snapshot_every_events=config.snapshot_every_events,
        cluster_k=config.cluster_k,
        cluster_halflife=config.cluster_halflife,
        cluster_warmup=config.cluster_warmup,
        churn_horizon_s=config.churn_horizon_s,
        churn_warmup=config.churn_warmup,
        churn_bands=(config.churn_medium_p, config.churn_high_p),
        churn_hysteresis=config.churn_hysteresis,
        version_tolerance=config.model_version_tolerance,
    )


def user_config(config: Config, segments: SegmentsConfig, hub: ModelHub | None = None,
                population: Population | None = None) -> UserConfig:
    """Build the user step's settings from the worker config and the segments file."""
    return UserConfig(
        features=FeatureConfig(
            session_gap_s=config.session_gap_s,
            windows=WindowLayout.build(config.window_horizons),
            engagement_half_life_s=config.engagement_half_life_s,
            required_attributes=config.required_attributes,
            max_traits=config.max_traits,
            cart=segments.cart_abandoner,
            journey=segments.journey,
        ),
        state_ttl_s=config.state_ttl_s,
        max_pending_events=config.max_pending_events,
        models=model_config(config) if hub is None else hub.config,
        hub=hub,
        rules=segments.rules,
        population=population,
    )


def build_flow(
    config: Config | None = None,
    *,
    segments: SegmentsConfig | None = None,
    source: Source[SourceItem] | None = None,
    sinks: Sinks | None = None,
    tail: bool = True,
    clock_interval_s: float | None = None,
    hub: ModelHub | None = None,
    population: Population | None = None,
    learn_source: Source[SourceItem] | None = None,
) -> Dataflow:
    """Assemble the segmentation dataflow.

    Args:
        config: worker settings; ``None`` means :func:`load_config`.
        segments: journey/segments definition; ``None`` loads ``config.segments_file``.
        source: input of ``KafkaSourceMessage`` / ``KafkaError``; default: the clickstream topics.
        sinks: outputs; default: :meth:`Sinks.default` (Kafka and Redis, one process).
        tail: with the default source, ``False`` stops at the current end of the topics.
        clock_interval_s: how often due timers are checked; default ``config.timer_tick_s``
            when tailing the default source, else no clock (a bounded run fires
            what is due at the end of its input, see ``docs/features.md``).
        hub: the models this process predicts with; default: a new one. ``segstream
            run`` passes one that a :class:`~segstream.flows.models.ModelFollower`
            keeps up to date when another process holds the learner.
        population: the population statistics rules read; default: a new one of
            this process's users. ``segstream run`` passes one that a
            :class:`~segstream.flows.population.PopulationSync` merges with the
            other processes'.
        learn_source: with ``config.shards > 1``, where shard 0 reads the other
            shards' snapshots and labels; default: the ``model_learn_topic``.

    Shards (``config.shards > 1``, independent processes that share nothing in
    Bytewax): shard 0 holds the learner and also learns what the others send
    on ``model_learn_topic``; the others send it there and have no learner.

    """
    config = load_config() if config is None else config
    if segments is None:
        segments = load_segments(config.segments_file, horizons=config.window_horizons)
    parser = event_parser(config)
    hub = ModelHub(model_config(config)) if hub is None else hub
    if population is None:
        population = segments.new_population()
    users = user_config(config, segments, hub, population)
    lateness, late_events = config.allowed_lateness_s, config.late_events
    if sinks is None:
        sinks = Sinks.default(config)
    workers = WorkerStates(lateness)
    if clock_interval_s is None and source is None and tail:
        clock_interval_s = config.timer_tick_s

    def parse_step(resume: float | None) -> _ParseStep:
        clock = PartitionWatermark(lateness)
        if resume is not None:
            clock.newest = resume
        return _ParseStep(parser, clock, late_events, users.features)

    def user_step(resume: bytes | None) -> _UserStep:
        return _UserStep(users, resume, workers.mine())

    flow = Dataflow("segstream")
    clickstream = source or kafka_source(config, tail=tail)
    raw = op.input("clickstream", flow, clickstream)
    # KafkaSourceMessage | KafkaError
    by_partition = op.key_on("key_by_partition", raw, partition_of)
    parsed = op.key_rm("unkey_partition", op.stateful_batch("parse", by_partition, parse_step))
    # Stamped | Rejected
    valid = op.branch("validate", parsed, lambda item: isinstance(item, Stamped))
    dead_letters = op.map("dead_letter", valid.falses,
                          lambda r: dead_letter(config.dlq_topic, r, config.dead_letter_max_bytes))
    # OutMessage (dead-letter topic)
    to_users = op.key_on("key_by_user", valid.trues, lambda stamped: stamped.key)
    # (user_id, Stamped)
    if clock_interval_s:
        polls = op.input("clock", flow, ClockSource(clock_interval_s))
        ticks = op.flat_map_batch("due_timers", polls, workers.due_ticks)
        # (user_id, Tick)
        to_users = op.merge("events_and_ticks", to_users, ticks)
    updates = op.stateful_batch("user_state", to_users, user_step)
    # (user_id, UserUpdate)
    updates = op.key_rm("unkey", updates)
    # UserUpdate
    changes = op.flat_map_batch(
        "serialize_changes", updates, lambda batch: change_messages(config.output_topic, batch)
    )
    # OutMessage (segment-changes topic)
    to_kafka = [changes, dead_letters]
    if config.shard > 0:
        to_kafka.append(op.flat_map_batch(
            "serialize_learn_items", updates,
            lambda batch: learn_messages(config.model_learn_topic, batch)))
        # OutMessage (model-learn topic, to shard 0's learner)
    else:
        if learn_source is None and config.shards > 1:
            # Bounded: shard 0 keeps learning while its own input is read.
            learn_source = kafka_source(config, tail=tail, topics=[config.model_learn_topic],
                                        after=clickstream if source is None else None)
        to_kafka.extend(_learner(flow, config, hub, updates, learn_source=learn_source,
                                 models_sink=sinks.models))
    _output("kafka_out", op.merge("to_kafka", *to_kafka), sinks.kafka)
    _output("redis_out", updates, sinks.redis)
    return flow


def _learner(flow: Dataflow, config: Config, hub: ModelHub, updates: Stream[UserUpdate], *,
             learn_source: Source[SourceItem] | None,
             models_sink: Sink[ModelEvent] | FixedPartitionedSink[ModelEvent, Any] | None,
             ) -> list[Stream[OutMessage]]:
    """Wire the model learner; return its Kafka output (model events, unreadable learn items)."""
    to_learner = op.flat_map("to_learner", updates, learn_items)
    # ("models", LearnItem)
    out = []
    if learn_source is not None:
        sent = op.input("model_learn", flow, learn_source)
        read = op.branch("read_learn_items", op.map("parse_learn_items", sent, read_learn_message),
                         lambda item: isinstance(item, tuple))
        to_learner = op.merge("learn_from_every_shard", to_learner, read.trues)
        out.append(op.map("dead_learn_item", read.falses,
                          lambda r: dead_letter(config.dlq_topic, r, config.dead_letter_max_bytes)))
    model_events = op.key_rm("unkey_models", op.stateful_batch(
        "learn", to_learner, lambda resume: LearnerStep(hub, resume)))
    # ModelEvent
    out.append(op.flat_map_batch(
        "serialize_model_events", model_events,
        lambda batch: model_event_messages(config.model_events_topic, batch)))
    # OutMessage (model-events topic)
    if models_sink is not None:
        _output("redis_models", model_events, models_sink)
    return out
