"""Bytewax sources and sinks for segstream: thin glue around confluent-kafka and the Redis store.

- :func:`kafka_source`: Bytewax's ``KafkaSource`` (it assigns partitions itself
  and keeps offsets in the recovery store; no consumer group), with consumer
  errors emitted into the flow rather than raised, so they can be dead-lettered.
- :class:`EpochSink`: the sinks' shape. A batch is written without waiting;
  each epoch's close waits for everything written, before Bytewax commits the
  epoch. A failed write raises, so the worker stops before committing unwritten
  output (at-least-once; the resume epoch is written again).
- :class:`KafkaOutSink`: produces through librdkafka's queue, one producer per process.
- :class:`RedisSink`, :class:`RedisModelSink`: one pipeline per batch through
  ``RedisStore``; a batch's replies are read when the next batch is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSource,
    KafkaSourceMessage,
    _KafkaSourcePartition,
    _list_parts,
)
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from segstream.operators.changes import REASON_HEADER, SOURCE_HEADER
from segstream.operators.events import Reason, Rejected, iso_utc
from segstream.operators.models import ModelEvent
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.errors import ConfigError, SegstreamError
from segstream.health import HEALTH
from segstream.kafka import produce_waiting
from segstream.metrics import (
    DEAD_LETTER_FAILURES,
    REDIS_PROFILE_WRITES,
    SINK_BATCH_SECONDS,
    SINK_EPOCH_WAIT_SECONDS,
)

X = TypeVar("X")
log = logging.getLogger(__name__)

SourceItem = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]
"""What a Kafka source emits: a message, or a consumer error carrying one."""


def reject(item: SourceItem, reason: Reason, detail: str) -> Rejected:
    """Return the dead letter of a source item: its original bytes and key, and where it came from."""
    msg = item.msg if isinstance(item, KafkaError) else item
    return Rejected(reason, detail, msg.value, msg.key, msg.topic, msg.partition, msg.offset)


class SinkError(SegstreamError):
    """A sink could not write its batch; the worker stops rather than lose output."""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One Kafka message to produce.

    ``best_effort``: a failure to produce it is counted and logged, not fatal
    (dead letters: the input stays in its topic, and stopping the worker for
    a message the broker refuses would stop it for good).
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    best_effort: bool = False


END_GRACE_S = 0.5
"""How long a bounded run's partition must stay at its end before the source stops reading it."""


class _SegstreamKafkaSource(KafkaSource):
    """KafkaSource with two changes.

    - Its partition listing gets only client-level settings: Bytewax passes the
      consumer settings to its AdminClient too, which makes librdkafka warn
      about every consumer-only property at start-up.
    - A bounded run (``tail=False``) stops reading a partition once it has stayed
      at its end for :data:`END_GRACE_S`, not at the first end-of-partition
      event: a broker can report an end that more data then follows (Tansu
      did, in a fetch response, and a bounded two-process run lost the rest of
      a partition), and Bytewax's partition also drops the messages that come
      after the event in the same batch.
    """

    def __init__(self, *args: object, admin_config: dict[str, str],
                 shard: tuple[int, int] = (0, 1), after: _SegstreamKafkaSource | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._admin_config = admin_config
        self._shard = shard
        self._after = after
        self._lock = threading.Lock()
        self.reading = 0
        """This process's partitions of the source that have not ended."""

    def ended_one(self) -> None:
        with self._lock:
            self.reading -= 1

    def list_parts(self) -> list[str]:
        client = AdminClient(self._admin_config)
        client.poll(0)
        return shard_parts(list(_list_parts(client, self._topics)), *self._shard)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _KafkaSourcePartition:
        part = super().build_part(step_id, for_part, resume_state)
        part.__class__ = _PatientPartition
        assert isinstance(part, _PatientPartition)
        part.source, part.after = self, self._after
        with self._lock:
            self.reading += 1
        return part


class _PatientPartition(_KafkaSourcePartition):
    """A source partition that ends only after it stayed at its end for :data:`END_GRACE_S`.

    With ``after``, it also waits until that source's partitions have ended.
    """

    _end_since: float | None = None
    source: _SegstreamKafkaSource | None = None
    after: _SegstreamKafkaSource | None = None

    def next_batch(self) -> list[KafkaSourceMessage[bytes | None, bytes | None]
                                  | KafkaError[bytes | None, bytes | None]]:
        HEALTH.beat()  # the worker's dataflow moves (segstream.health)
        if self._end_since is not None and time.monotonic() - self._end_since >= END_GRACE_S:
            if self.after is None or self.after.reading <= 0:
                if self.source is not None:
                    self.source.ended_one()
                raise StopIteration
        batch: list[KafkaSourceMessage[bytes | None, bytes | None]
                    | KafkaError[bytes | None, bytes | None]] = []
        for msg in self._consumer.consume(self._batch_size, 0.001):
            error = msg.error()
            if error is not None and error.code() == ConfluentKafkaError._PARTITION_EOF:  # noqa: SLF001
                if self._end_since is None:
                    self._end_since = time.monotonic()
                continue
            self._end_since = None
            if error is not None and self._raise_on_errors:
                msg_text = f"error consuming from Kafka topic {self._topic!r}: {error}"
                raise RuntimeError(msg_text)
            message = KafkaSourceMessage(
                key=msg.key(), value=msg.value(), topic=msg.topic(), headers=msg.headers() or [],
                latency=msg.latency(), offset=msg.offset(), partition=msg.partition(),
                timestamp=msg.timestamp(),
            )
            batch.append(message if error is None else KafkaError(error, message))
            self._offset = msg.offset() + 1
        if batch:
            HEALTH.progress()
        elif self._offset >= 0 and self._high_watermark() > self._offset:
            HEALTH.input_waiting()
        return batch

    def _high_watermark(self) -> int:
        """Return the partition's end as the broker's last fetch answer gave it (no request is made)."""
        try:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._part_idx), cached=True)
        except KafkaException:
            return -1
        return int(high)


def consumer_settings(config: Config) -> dict[str, str]:
    """Librdkafka consumer settings of the source, from config."""
    return {
        "fetch.wait.max.ms": str(config.fetch_wait_max_ms),
        # librdkafka's default 1000 ms backoff stalls a consumer that caught up.
        "fetch.queue.backoff.ms": "10",
        "allow.auto.create.topics": "false",
        **dict(config.kafka_options),
    }


def kafka_source(config: Config, *, tail: bool = True, topics: Sequence[str] | None = None,
                 after: KafkaSource | None = None) -> KafkaSource:
    """Build the clickstream source; ``tail=False`` stops at the end of the topics.

    It reads this process's shard of the input partitions (every partition
    unless ``config.shards > 1``, see :func:`shard_parts`). ``topics``: read
    these topics instead, every partition of them. ``after``: a bounded source
    built here that must end first (shard 0 learns what the other shards send
    while it reads its own input, then until its learn topic stays quiet).
    """
    if after is not None and not isinstance(after, _SegstreamKafkaSource):
        raise TypeError("after must be a source built by kafka_source")
    admin = {"bootstrap.servers": ",".join(config.brokers), **dict(config.kafka_options)}
    return _SegstreamKafkaSource(
        list(config.brokers),
        list(config.input_topics if topics is None else topics),
        tail=tail,
        add_config=consumer_settings(config),
        batch_size=config.source_batch_size,
        raise_on_errors=False,
        admin_config=admin,
        shard=(config.shard, config.shards) if topics is None else (0, 1),
        after=after,
    )


def shard_parts(parts: Sequence[str], shard: int, shards: int) -> list[str]:
    """Return the source partitions (Bytewax's ``"{partition}-{topic}"``) of one shard.

    Partition ``p`` of every topic goes to shard ``p mod shards``. A user's
    events stay in one shard only if they stay in one partition number: every
    topic keyed by user, with the same partition count.

    >>> shard_parts(["0-clicks", "1-clicks", "2-clicks", "3-clicks"], 1, 2)
    ['1-clicks', '3-clicks']

    Raises:
        ConfigError: the topics' partition counts differ, or are fewer than the
            shards (a shard would read nothing).

    """
    numbered = [(int(number), topic) for number, topic in (part.split("-", 1) for part in parts)]
    counts: dict[str, int] = {}
    for _number, topic in numbered:
        counts[topic] = counts.get(topic, 0) + 1
    if shards > 1:
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{topic}: {count}" for topic, count in sorted(counts.items()))
            raise ConfigError("shards", "config", "the input topics must have the same partition "
                              f"count, or a user's events would reach two shards ({listing})")
        if any(count < shards for count in counts.values()):
            raise ConfigError("shards", "config", f"{shards} shards need at least {shards} "
                              f"partitions in every input topic ({min(counts.values())} found)")
    return [part for part, (number, _topic) in zip(parts, numbered, strict=True)
            if number % shards == shard]


SINK_PARTITIONS = 256
"""Partitions of each :class:`EpochSink`: one per process, so at most this many processes.

Bytewax tells a sink when an epoch closes only if it is a
``FixedPartitionedSink``, and routes each item to the worker that is primary
for the item's partition. Process ``i`` writes through partition ``i`` so that
output never crosses processes, and also lists ``i + n``, ``i + 2n``, ... for
``n`` processes: every partition is listed by some process whatever ``n`` is, so
a recovery store written by another process count still resumes (Bytewax
panics on a stored partition that no worker lists).
"""


def sink_partition(index: int) -> str:
    """Name of an epoch sink's partition ``index``; the names sort in index order.

    >>> sink_partition(7)
    'process-007'
    """
    return f"process-{index:03d}"


class EpochSink(FixedPartitionedSink[X, None]):
    """A sink that writes without waiting and waits for its writes once per epoch.

    ``write`` starts writing a batch and returns; at each epoch's close Bytewax
    calls the partition's ``snapshot``, which waits until everything written
    so far has landed, before Bytewax commits the epoch. So a worker does not
    wait a round trip per batch, and output is still written at least once: a
    failed write raises :class:`SinkError` at the next batch or the epoch's
    close, which stops the worker before its epoch is committed.

    One partition per process (``process_id`` of ``processes``, see
    :data:`SINK_PARTITIONS`); items come as ``(key, item)`` with the key unused.
    """

    label = "sink"
    """The ``sink`` label of the sink's metrics."""

    def __init__(self, *, process_id: int = 0, processes: int = 1) -> None:
        if not 0 < processes <= SINK_PARTITIONS:
            msg = f"segstream runs 1 to {SINK_PARTITIONS} processes, not {processes}"
            raise ConfigError("--addresses", "command line", msg)
        if not 0 <= process_id < processes:
            msg = f"process id {process_id} is not one of 0..{processes - 1}"
            raise ConfigError("--process-id", "command line", msg)
        self._process_id, self._processes = process_id, processes
        # A process's partitions share the sink's connection: the last one to
        # close releases it. Workers of one process may close theirs at once.
        self._open_parts = 0
        self._parts_lock = threading.Lock()

    def list_parts(self) -> list[str]:
        """List this process's partition and the ones no process of this count writes."""
        return [sink_partition(i) for i in range(self._process_id, SINK_PARTITIONS, self._processes)]

    def part_fn(self, item_key: str) -> int:
        """Route every item to this process's partition (the ``process_id``-th of all, sorted)."""
        return self._process_id

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _EpochPartition[X]:
        """Build a partition; a process's partitions share the sink's one connection."""
        with self._parts_lock:
            self._open_parts += 1
        return _EpochPartition(self)

    @abstractmethod
    def write(self, items: list[X]) -> None:
        """Start writing ``items``; raise :class:`SinkError` if an earlier write failed."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """Wait for every write so far; return how many items are still unwritten at ``timeout``.

        Raises :class:`SinkError` if a write failed.
        """

    @abstractmethod
    def release(self) -> None:
        """Close the connection; called once every partition of the process has closed.

        Whatever was written has landed by then (each partition waits as it
        closes). A later ``write`` would open a new connection.
        """

    def close_part(self) -> None:
        """Wait for every write as a partition closes (end of input); the last one releases."""
        self.wait()
        with self._parts_lock:
            self._open_parts -= 1
            last = self._open_parts == 0
        if last:
            self.release()


class _EpochPartition(StatefulSinkPartition[X, None]):
    def __init__(self, sink: EpochSink[X]) -> None:
        self._sink = sink

    def write_batch(self, items: list[X]) -> None:
        self._sink.write(items)

    def snapshot(self) -> None:
        started = time.perf_counter()
        self._sink.wait()
        SINK_EPOCH_WAIT_SECONDS.labels(self._sink.label).observe(time.perf_counter() - started)

    def close(self) -> None:
        self._sink.close_part()


class KafkaOutSink(EpochSink[OutMessage]):
    """Produces :class:`OutMessage` s, one producer per process.

    Writing a batch hands the messages to librdkafka, which sends them after
    ``producer_linger_ms``; the epoch's close waits for their delivery.
    """

    label = "kafka"

    def __init__(self, config: Config, *, process_id: int = 0, processes: int = 1) -> None:
        super().__init__(process_id=process_id, processes=processes)
        self._settings: dict[str, Any] = {
            "bootstrap.servers": ",".join(config.brokers),
            "linger.ms": str(config.producer_linger_ms),
            # A produce undelivered this long fails (and stops the worker), as
            # Redis gives up after outage_give_up_s: librdkafka's own is 300 s.
            "message.timeout.ms": str(max(round(config.outage_give_up_s * 1000),
                                          config.producer_linger_ms + 1000)),
            **dict(config.kafka_options),
            "error_cb": self._on_error,
        }
        self._producer: Producer | None = None
        self._undelivered: list[str] = []
        self._delivered = False

    def _producer_now(self) -> Producer:
        # One thread writes: the worker that is primary for this process's
        # partition (the only partition that gets items).
        if self._producer is None:
            try:
                self._producer = Producer(self._settings)
            except KafkaException as exc:
                msg = f"cannot create a Kafka producer: {exc}"
                raise SinkError(msg) from exc
        return self._producer

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._undelivered.append(str(err))
            HEALTH.sink_failing(self.label, str(err))
        else:
            self._delivered = True  # the health hears of it once per batch (_report_deliveries)

    def _report_deliveries(self) -> None:
        if self._delivered:
            self._delivered = False
            HEALTH.sink_ok(self.label)

    def _on_error(self, err: Any) -> None:
        """Mark the sink failing while no broker answers (or the client failed for good).

        librdkafka keeps retrying and repeats the error while it lasts; a
        delivery clears it. One broker of several down is no failure of the sink.
        """
        if getattr(err, "code", lambda: None)() in _SINK_DOWN_ERRORS:
            HEALTH.sink_failing(self.label, str(err))

    def _on_best_effort_delivery(self, err: object, msg: Any) -> None:
        if err is not None:
            _lost_best_effort(msg.topic(), msg.headers() or [], len(msg.value() or b""), str(err),
                              getattr(err, "name", lambda: "unknown")())

    def _raise_undelivered(self) -> None:
        if self._undelivered:
            errors, self._undelivered = self._undelivered, []
            msg = f"{len(errors)} messages were not delivered to Kafka, first: {errors[0]}"
            raise SinkError(msg)

    def write(self, items: list[OutMessage]) -> None:
        """Produce ``items`` without waiting for their delivery."""
        started = time.perf_counter()
        producer, on_delivery = self._producer_now(), self._on_delivery
        for msg in items:
            if msg.best_effort:
                self._produce_best_effort(producer, msg)
                continue
            produce_waiting(producer, msg.topic, msg.value, msg.key, headers=msg.headers,
                            on_delivery=on_delivery)
        producer.poll(0)  # serves delivery reports, so a failure surfaces soon
        SINK_BATCH_SECONDS.labels(self.label).observe(time.perf_counter() - started)
        self._raise_undelivered()
        self._report_deliveries()

    def _produce_best_effort(self, producer: Producer, msg: OutMessage) -> None:
        """Produce a best-effort message; one librdkafka refuses at once is counted and logged."""
        try:
            produce_waiting(producer, msg.topic, msg.value, msg.key, headers=msg.headers,
                            on_delivery=self._on_best_effort_delivery)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            name = error.name() if isinstance(error, ConfluentKafkaError) else type(exc).__name__
            _lost_best_effort(msg.topic, msg.headers, len(msg.value or b""), str(exc), name)

    def wait(self, timeout: float | None = None) -> int:
        """Wait until every message produced so far is delivered (or failed)."""
        if self._producer is None:
            return 0
        left = self._producer.flush() if timeout is None else self._producer.flush(timeout)
        self._raise_undelivered()
        self._report_deliveries()
        return int(left)

    def release(self) -> None:
        """Drop the producer, which closes its connections (librdkafka destroys it)."""
        self._producer = None


_SINK_DOWN_ERRORS = frozenset({ConfluentKafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
                               ConfluentKafkaError._AUTHENTICATION,  # noqa: SLF001
                               ConfluentKafkaError._FATAL})  # noqa: SLF001
"""Client-level errors that mean the producer can deliver nothing."""


def _lost_best_effort(topic: str, headers: Sequence[tuple[str, bytes | None]], size: int,
                      problem: str, error: str) -> None:
    """Count and log a best-effort message that could not be produced, naming its source."""
    found = dict(headers)
    DEAD_LETTER_FAILURES.labels(error).inc()
    log.error("a dead letter for %s (reason %s, %d bytes) could not be produced to %s and is "
              "dropped; the input is still at that offset: %s",
              (found.get(SOURCE_HEADER) or b"?").decode(errors="replace"),
              (found.get(REASON_HEADER) or b"?").decode(errors="replace"), size, topic, problem)


def merge_updates(updates: Sequence[UserUpdate]) -> list[UserUpdate]:
    """Fold several updates of one user in a batch into one (changes kept in order).

    An eviction is never folded: what came before it, the eviction itself and
    what came after stay separate updates, in order.
    """
    out: list[UserUpdate] = []
    last: dict[str, int] = {}
    for update in updates:
        index = last.get(update.user_id)
        if index is not None and not update.evicted and not out[index].evicted:
            update = UserUpdate(
                update.user_id, update.version, update.events_total, update.profile_json,
                out[index].changes + update.changes,
            )
            out[index] = update
        else:
            last[update.user_id] = len(out)
            out.append(update)
    return out


Finish = Callable[[], None]
"""Reads what a sent Redis batch replied (and raises if it failed)."""


class _RedisSink(EpochSink[X]):
    """One Redis connection per process; a batch's replies are read when the next one is sent.

    ``send`` sends a batch and returns what reads its replies. Redis runs a
    batch while the worker computes the next one, so the worker rarely waits
    for it; batches still land in order.
    """

    def __init__(self, config: Config, send: Callable[[RedisStore, list[X]], Finish], label: str,
                 *, process_id: int = 0, processes: int = 1) -> None:
        super().__init__(process_id=process_id, processes=processes)
        self._url, self._prefix = config.redis_url, config.redis_prefix
        self._give_up_s, self._timeout_s = config.outage_give_up_s, config.redis_timeout_s
        self._send, self.label = send, label
        self._store: RedisStore | None = None
        self._unread: Finish | None = None

    def write(self, items: list[X]) -> None:
        """Read the previous batch's replies, then send ``items``."""
        started = time.perf_counter()
        self._read_replies()
        if self._store is None:
            self._store = RedisStore.from_url(self._url, self._prefix, retry_s=self._give_up_s,
                                              timeout_s=self._timeout_s,
                                              on_failure=self._health)
        self._unread = self._send(self._store, items)
        SINK_BATCH_SECONDS.labels(self.label).observe(time.perf_counter() - started)

    def wait(self, timeout: float | None = None) -> int:
        """Read the last batch's replies (``timeout`` is unused: the store's retries bound it)."""
        self._read_replies()
        return 0

    def _health(self, problem: str | None) -> None:
        if problem is None:
            HEALTH.sink_ok(self.label)
        else:
            HEALTH.sink_failing(self.label, problem)

    def release(self) -> None:
        """Close the connection to Redis."""
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def _read_replies(self) -> None:
        unread, self._unread = self._unread, None
        if unread is not None:
            try:
                unread()
            except redis.RedisError as exc:
                msg = f"{self.label}: Redis failed a batch: {type(exc).__name__}: {exc}"
                raise SinkError(msg) from exc


def _send_updates(store: RedisStore, items: list[UserUpdate]) -> Finish:
    pending = store.send_apply(merge_updates(items), updated_at=iso_utc(time.time()))
    return lambda: REDIS_PROFILE_WRITES.inc(pending.result())


def _write_model_events(store: RedisStore, items: list[ModelEvent]) -> Finish:
    # A version or two per snapshot interval: written at once.
    store.apply_model(items)
    return _nothing


def _nothing() -> None:
    pass


class RedisSink(_RedisSink[UserUpdate]):
    """Writes :class:`UserUpdate` s to Redis, one connection per process."""

    def __init__(self, config: Config, *, process_id: int = 0, processes: int = 1) -> None:
        super().__init__(config, _send_updates, "redis", process_id=process_id,
                         processes=processes)


class RedisModelSink(_RedisSink[ModelEvent]):
    """Writes the models' new versions (cluster descriptions, quality) to Redis."""

    def __init__(self, config: Config, *, process_id: int = 0, processes: int = 1) -> None:
        super().__init__(config, _write_model_events, "redis_model", process_id=process_id,
                         processes=processes)
