"""The segstream dataflow, wired left to right as in DESIGN.md.

Run it with ``segstream run`` or directly::

    python -m bytewax.run "segstream.flows.segmentation:build_flow()"

Nothing happens at import. Tests pass a ``TestingSource`` of
``KafkaSourceMessage`` s and ``TestingSink`` s.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from segstream.flows.connectors import KafkaOutSink, OutMessage, RedisSink, kafka_source
from segstream.operators.changes import change_key, change_value, dead_letter_headers
from segstream.operators.events import Event, Reason, Rejected
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic, UserUpdate

from segstream.config import Config, SegmentsConfig, load_config, load_segments
from segstream.metrics import (
    CHANGES_OUT,
    CONSUMER_LAG_SECONDS,
    DEAD_LETTERS,
    EVENT_TIME_LAG_SECONDS,
    EVENTS_IN,
    LAST_BATCH_UNIXTIME,
)

SourceItem = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where the flow writes: Kafka (changes and dead letters) and Redis (profiles)."""

    kafka: Sink[OutMessage]
    redis: Sink[UserUpdate]


def parse_batch(parser: EventParser, items: list[SourceItem]) -> list[Event | Rejected]:
    """Parse a batch of source messages; consumer errors become ``source_error`` rejects.

    Metrics are counted in the same pass and recorded once per batch.
    """
    out: list[Event | Rejected] = []
    parse = parser.parse
    newest_append_ms = 0
    newest_event = 0.0
    valid = 0
    rejected: Counter[str] = Counter()
    for item in items:
        if isinstance(item, KafkaError):
            msg = item.msg
            result: Event | Rejected = Rejected(
                Reason.SOURCE_ERROR, str(item.err), msg.value, msg.key,
                msg.topic, msg.partition, msg.offset,
            )
        else:
            result = parse(item.value, key=item.key, topic=item.topic,
                           partition=item.partition, offset=item.offset)
            if item.timestamp is not None and item.timestamp[1] > newest_append_ms:
                newest_append_ms = item.timestamp[1]
        if isinstance(result, Event):
            valid += 1
            if result.timestamp > newest_event:
                newest_event = result.timestamp
        else:
            rejected[result.reason.value] += 1
        out.append(result)

    now = time.time()
    EVENTS_IN.inc(valid)
    for reason, count in rejected.items():
        DEAD_LETTERS.labels(reason).inc(count)
    LAST_BATCH_UNIXTIME.set(now)
    if newest_append_ms:
        CONSUMER_LAG_SECONDS.set(max(0.0, now - newest_append_ms / 1000))
    if newest_event:
        EVENT_TIME_LAG_SECONDS.set(now - newest_event)
    return out


def dead_letter(dlq_topic: str, rejected: Rejected) -> OutMessage:
    """Build the dead-letter message: original key and bytes, reason and source in headers."""
    return OutMessage(dlq_topic, rejected.key, rejected.raw, dead_letter_headers(rejected))


def change_messages(output_topic: str, updates: list[UserUpdate]) -> list[OutMessage]:
    """Serialize the changes of a batch of updates for the ``segment-changes`` topic."""
    emitted_at = time.time()
    out = []
    kinds: Counter[str] = Counter()
    for update in updates:
        for change in update.changes:
            out.append(OutMessage(output_topic, change_key(change),
                                  change_value(change, emitted_at=emitted_at)))
            kinds[change.kind] += 1
    for kind, count in kinds.items():
        CHANGES_OUT.labels(kind).inc(count)
    return out


class _UserStep(StatefulBatchLogic[Event, UserUpdate, bytes]):
    """Bytewax shim around :class:`UserLogic`: one update per key per batch."""

    __slots__ = ("logic",)

    def __init__(self, logic: UserLogic) -> None:
        self.logic = logic

    def on_batch(self, values: list[Event]) -> tuple[Iterable[UserUpdate], bool]:
        update = self.logic.on_batch(values)
        return ([] if update is None else [update]), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        snap = self.logic.snapshot()
        assert snap is not None, "a user's logic is snapshotted only after an event"
        return snap


def build_flow(
    config: Config | None = None,
    *,
    segments: SegmentsConfig | None = None,
    source: Source[SourceItem] | None = None,
    sinks: Sinks | None = None,
    tail: bool = True,
) -> Dataflow:
    """Assemble the segmentation dataflow.

    Args:
        config: worker settings; ``None`` means :func:`load_config`.
        segments: journey/segments definition; ``None`` loads ``config.segments_file``.
        source: input of ``KafkaSourceMessage`` / ``KafkaError``; default: the clickstream topics.
        sinks: outputs; default: Kafka (changes + dead letters) and Redis.
        tail: with the default source, ``False`` stops at the current end of the topics.

    """
    config = load_config() if config is None else config
    segments = load_segments(config.segments_file) if segments is None else segments
    parser = EventParser(taxonomy=config.taxonomy, max_event_bytes=config.max_event_bytes)
    user_config = UserConfig(journey=segments.journey, session_gap_s=config.session_gap_s)
    if sinks is None:
        sinks = Sinks(kafka=KafkaOutSink(config), redis=RedisSink(config))

    flow = Dataflow("segstream")
    raw = op.input("clickstream", flow, source or kafka_source(config, tail=tail))
    # KafkaSourceMessage | KafkaError
    parsed = op.flat_map_batch("parse", raw, lambda batch: parse_batch(parser, batch))
    # Event | Rejected
    valid = op.branch("validate", parsed, lambda item: isinstance(item, Event))
    dead_letters = op.map("dead_letter", valid.falses, lambda r: dead_letter(config.dlq_topic, r))
    # OutMessage (dead-letter topic)
    by_user = op.key_on("key_by_user", valid.trues, lambda event: event.key)
    # (user_id, Event)
    updates = op.stateful_batch(
        "user_state", by_user, lambda resume: _UserStep(UserLogic.build(user_config, resume))
    )
    # (user_id, UserUpdate)
    updates = op.key_rm("unkey", updates)
    # UserUpdate
    changes = op.flat_map_batch(
        "serialize_changes", updates, lambda batch: change_messages(config.output_topic, batch)
    )
    # OutMessage (segment-changes topic)
    op.output("kafka_out", op.merge("to_kafka", changes, dead_letters), sinks.kafka)
    op.output("redis_out", updates, sinks.redis)
    return flow
