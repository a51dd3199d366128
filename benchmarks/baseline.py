"""The baseline a user might write instead of the Bytewax flow: one plain consumer loop.

A confluent-kafka ``Consumer`` polls batches of up to 1,000 messages and, in
the same Python loop, does what the full flow (``build_flow``) does with the
project's own building blocks:

- parse and watermark each partition's messages in order
  (``parse_batch``, one ``PartitionWatermark`` per input partition);
- dead-letter what is rejected (``dead_letter``) to the DLQ topic;
- group the batch's events by user key, in arrival order, and run each user's
  group through that user's ``UserLogic`` (one per user key in a dict; a user
  evicted by the logic is dropped from it, as the flow discards its state);
- learn the updates' model items on the process's ``ModelHub`` (as the flow's
  learner step does), producing the model events to the model-events topic and
  writing the new model versions to Redis;
- produce the segment changes (``change_messages``) to the output topic, and
  write the updates to Redis once per batch (``merge_updates`` +
  ``RedisStore.apply``, as ``RedisSink`` does);
- produce with the sink's producer settings and flush once per batch; a
  delivery failure raises.

What it does not do, compared with the flow:

- No timer wheel and no clock: timers that fall due while consuming are not
  fired during the run. A bounded run (this one) settles each user to its
  partition's last watermark at the end, exactly as the bounded flow's
  ``on_eof`` does (the bounded flow has no clock either), so both write the same
  profiles; a tailing version would need the wheel and ``Tick`` s.
- No recovery snapshots, no committed offsets (partitions are assigned from the
  beginning, like Bytewax's source), one process and one thread.
- Not the gauges and counters the flow's Bytewax shims keep (users in state,
  evictions, timer ticks, model quality); the ones ``parse_batch`` and
  ``change_messages`` record are recorded.
- Input is bounded by a message count (``expected``), not by end-of-partition
  events, which the test broker (Tansu) reports unreliably.

Like ``benchmarks/throughput.py`` it starts a local Tansu broker and a
redis-server, produces a generated log to one topic, and prints events/s
(start-up of the consumer included, from the first poll to the last flush)::

    python -m benchmarks.baseline --events 50000 --users 5000
"""

from __future__ import annotations

import argparse
import platform
import time
import uuid
from dataclasses import dataclass

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient
from segstream.flows.connectors import OutMessage, consumer_settings, merge_updates
from segstream.flows.models import model_event_messages
from segstream.flows.segmentation import (
    SourceItem,
    change_messages,
    dead_letter,
    event_parser,
    model_config,
    parse_batch,
    user_config,
)
from segstream.operators.event_time import PartitionWatermark, Stamped
from segstream.operators.events import iso_utc
from segstream.operators.models import ModelHub
from segstream.operators.user import UserLogic, UserUpdate
from segstream.state.redis import RedisStore

from segstream.config import Config, load_config, load_segments
from segstream.errors import SegstreamError
from segstream.kafka import find_topic, produce_waiting
from segstream.services import RedisServer, TansuBroker
from segstream.tools.generate import generate

BATCH = 1000
"""Messages asked for per ``consume`` call."""


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """What one bounded baseline run did.

    Attributes:
        events: input messages consumed (valid, malformed and late alike).
        seconds: wall time from the first poll to the last flush.
        changes: segment-change messages produced.
        dead_letters: dead-letter messages produced.
        model_events: model-event messages produced.
        users: users in state at the end.

    """

    events: int
    seconds: float
    changes: int
    dead_letters: int
    model_events: int = 0
    users: int = 0

    @property
    def events_per_s(self) -> float:
        """Consumed messages per second of :attr:`seconds`."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Outputs:
    """The producer and the Redis store, written once per batch."""

    def __init__(self, config: Config) -> None:
        self.producer = Producer({
            "bootstrap.servers": ",".join(config.brokers),
            "linger.ms": str(config.producer_linger_ms),
            **dict(config.kafka_options),
        })
        self.store = RedisStore.from_url(config.redis_url, config.redis_prefix)
        self.errors: list[str] = []

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, messages: list[OutMessage], updates: list[UserUpdate]) -> None:
        """Produce ``messages``, write ``updates`` to Redis meanwhile, then flush."""
        producer, on_delivery = self.producer, self._on_delivery
        for msg in messages:
            produce_waiting(producer, msg.topic, msg.value, msg.key, headers=msg.headers,
                            on_delivery=on_delivery)
        if updates:
            self.store.apply(merge_updates(updates), updated_at=iso_utc(time.time()))
        producer.flush()
        if self.errors:
            errors, self.errors = self.errors, []
            text = f"{len(errors)} messages were not delivered to Kafka, first: {errors[0]}"
            raise SegstreamError(text)

    def close(self) -> None:
        self.producer.flush()
        self.store.close()


def _consumer(config: Config) -> Consumer:
    """A consumer assigned every partition of the input topics, from the beginning."""
    admin = AdminClient({"bootstrap.servers": ",".join(config.brokers),
                         **dict(config.kafka_options)})
    assignment = []
    for topic in config.input_topics:
        meta = find_topic(admin, topic)  # listing all topics: asking for one creates it on Tansu
        if meta is None or meta.error is not None:
            text = f"cannot read topic {topic!r}: {'no such topic' if meta is None else meta.error}"
            raise SegstreamError(text)
        assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
    consumer = Consumer({
        **consumer_settings(config),
        "bootstrap.servers": ",".join(config.brokers),
        "group.id": f"segstream-baseline-{uuid.uuid4().hex}",  # never committed
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
        # Tansu: without these a consumer that caught up stalls.
        "fetch.wait.max.ms": "5",
        "fetch.queue.backoff.ms": "10",
        **dict(config.kafka_options),
    })
    consumer.assign(assignment)
    return consumer


def run_baseline(config: Config, expected: int, *, timeout_s: float = 600.0) -> BaselineResult:
    """Consume ``expected`` messages from the input topics and do the full flow's work on them.

    Raises:
        TimeoutError: fewer than ``expected`` messages arrived within ``timeout_s``.
        SegstreamError: an input topic is missing, or output was not delivered.

    """
    segments = load_segments(config.segments_file, horizons=config.window_horizons)
    parser = event_parser(config)
    hub = ModelHub(model_config(config))
    settings = user_config(config, segments, hub, segments.new_population())
    lateness, late_events = config.allowed_lateness_s, config.late_events
    output_topic, dlq_topic = config.output_topic, config.dlq_topic
    models_topic = config.model_events_topic

    clocks: dict[str, PartitionWatermark] = {}  # "topic:partition" -> its watermark
    users: dict[str, UserLogic] = {}
    timers: dict[str, tuple[float, str]] = {}  # user -> (earliest deadline, its partition)
    outputs = _Outputs(config)
    consumer = _consumer(config)
    consumed = changes = dead_letters = model_messages = 0

    def step(batch: dict[str, list[Stamped]]) -> list[UserUpdate]:
        """Run each user's events of a batch through their logic."""
        updates: list[UserUpdate] = []
        for key, items in batch.items():
            logic = users.get(key)
            if logic is None:
                logic = users[key] = UserLogic(settings)
            updates += logic.on_items(items)
            keep(key, logic)
        return updates

    def keep(key: str, logic: UserLogic) -> None:
        """Note the user's timer for the end of the run; drop an evicted user."""
        changed, timer = logic.take_timer()
        if changed:
            if timer is None or logic.data is None:
                timers.pop(key, None)
            else:
                timers[key] = timer
        if logic.data is None:
            del users[key]

    def emit(updates: list[UserUpdate], out: list[OutMessage]) -> None:
        nonlocal changes, model_messages
        learn = [item for update in updates for item in update.learn]
        if learn:
            events = hub.learn(learn)
            if events:
                models = model_event_messages(models_topic, events)
                model_messages += len(models)
                out += models
                outputs.store.apply_model(events)
        messages = change_messages(output_topic, updates)
        changes += len(messages)
        out += messages
        outputs.write(out, updates)

    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        while consumed < expected:
            if time.monotonic() > deadline:
                text = f"baseline: {consumed} of {expected} messages within {timeout_s:g} s"
                raise TimeoutError(text)
            polled = consumer.consume(num_messages=BATCH, timeout=0.1)
            if not polled:
                continue
            by_partition: dict[str, list[SourceItem]] = {}
            for msg in polled:
                error = msg.error()
                if error is not None and error.code() == ConfluentKafkaError._PARTITION_EOF:  # noqa: SLF001
                    continue
                item: SourceItem = KafkaSourceMessage(
                    key=msg.key(), value=msg.value(), topic=msg.topic(),
                    headers=msg.headers() or [], latency=msg.latency(), offset=msg.offset(),
                    partition=msg.partition(), timestamp=msg.timestamp(),
                )
                if error is not None:
                    item = KafkaError(error, item)
                part = f"{msg.topic()}:{msg.partition()}"
                found = by_partition.get(part)
                if found is None:
                    by_partition[part] = [item]
                else:
                    found.append(item)
                consumed += 1
            out: list[OutMessage] = []
            batch: dict[str, list[Stamped]] = {}
            for part, items in by_partition.items():
                clock = clocks.get(part)
                if clock is None:
                    clock = clocks[part] = PartitionWatermark(lateness)
                for result in parse_batch(parser, items, clock, late_events=late_events,
                                          features=settings.features):
                    if isinstance(result, Stamped):
                        key = result.key
                        found_items = batch.get(key)
                        if found_items is None:
                            batch[key] = [result]
                        else:
                            found_items.append(result)
                    else:
                        out.append(dead_letter(dlq_topic, result, config.dead_letter_max_bytes))
            dead_letters += len(out)
            emit(step(batch), out)

        # End of the bounded input: settle every user whose timer its partition's
        # last watermark passed, as the bounded flow's on_eof does.
        settled: list[UserUpdate] = []
        for key, (due, part) in list(timers.items()):
            clock = clocks.get(part)
            if clock is not None and clock.watermark > due:
                logic = users[key]
                settled += logic.on_watermark(clock.watermark)
                keep(key, logic)
        emit(settled, [])
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
        outputs.close()
    return BaselineResult(consumed, seconds, changes, dead_letters, model_messages, len(users))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--consume-only", type=int, metavar="EXPECTED",
                    help="only consume EXPECTED messages from the topics of SEGSTREAM_* "
                         "(benchmarks/bench.py)")
    args = ap.parse_args()
    if args.consume_only is not None:
        run_baseline(load_config(), args.consume_only, timeout_s=3600.0)
        return
    log = generate(args.users, args.events, seed=1)
    with TansuBroker() as broker, RedisServer() as redis_server:
        broker.create_topics(["clicks"], partitions=args.partitions)
        broker.create_topics(["out-base", "dlq-base", "models-base"])
        expected = broker.produce("clicks", ((None, line) for line in log.lines))
        config = load_config(env={
            "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": "clicks",
            "SEGSTREAM_OUTPUT_TOPIC": "out-base", "SEGSTREAM_DLQ_TOPIC": "dlq-base",
            "SEGSTREAM_MODEL_EVENTS_TOPIC": "models-base",
            "SEGSTREAM_REDIS_URL": redis_server.url, "SEGSTREAM_RECOVERY_DIR": ""})
        result = run_baseline(config, expected)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"broker: Tansu (local, memory), {args.events} events, {args.users} users, "
          f"{args.partitions} partition(s), 1 process")
    print(f"baseline: {result.events} events in {result.seconds:.2f} s, {result.changes} changes, "
          f"{result.dead_letters} dead letters, {result.model_events} model events, "
          f"{result.users} users in state")
    print(f"{'baseline':<12} {result.events_per_s:>10,.0f} events/s")


if __name__ == "__main__":
    main()
