"""Bytewax sources and sinks for segstream: thin glue around confluent-kafka and the Redis store.

- :func:`kafka_source`: Bytewax's ``KafkaSource`` (it assigns partitions itself
  and keeps offsets in the recovery store; no consumer group), with consumer
  errors emitted into the flow rather than raised, so they can be dead-lettered.
- :class:`KafkaOutSink`: produces asynchronously and flushes once per batch;
  a delivery failure raises, so the worker stops before its snapshot moves past
  unwritten output (at-least-once; the resume epoch is produced again).
- :class:`RedisSink`: one pipeline per batch through ``RedisStore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bytewax.connectors.kafka import (
    KafkaError,
    KafkaSource,
    KafkaSourceMessage,
    _KafkaSourcePartition,
    _list_parts,
)
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from segstream.operators.events import iso_utc
from segstream.operators.models import ModelEvent
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.errors import SegstreamError
from segstream.kafka import produce_waiting
from segstream.metrics import REDIS_PROFILE_WRITES, SINK_BATCH_SECONDS

X = TypeVar("X")


class SinkError(SegstreamError):
    """A sink could not write its batch; the worker stops rather than lose output."""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One Kafka message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


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

    def __init__(self, *args: object, admin_config: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._admin_config = admin_config

    def list_parts(self) -> list[str]:
        client = AdminClient(self._admin_config)
        client.poll(0)
        return list(_list_parts(client, self._topics))

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _KafkaSourcePartition:
        part = super().build_part(step_id, for_part, resume_state)
        part.__class__ = _PatientPartition
        return part


class _PatientPartition(_KafkaSourcePartition):
    """A source partition that ends only after it stayed at its end for :data:`END_GRACE_S`."""

    _end_since: float | None = None

    def next_batch(self) -> list[KafkaSourceMessage[bytes | None, bytes | None]
                                  | KafkaError[bytes | None, bytes | None]]:
        if self._end_since is not None and time.monotonic() - self._end_since >= END_GRACE_S:
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
        return batch


def consumer_settings(config: Config) -> dict[str, str]:
    """Librdkafka consumer settings of the source, from config."""
    return {
        "fetch.wait.max.ms": str(config.fetch_wait_max_ms),
        # librdkafka's default 1000 ms backoff stalls a consumer that caught up.
        "fetch.queue.backoff.ms": "10",
        "allow.auto.create.topics": "false",
        **dict(config.kafka_options),
    }


def kafka_source(config: Config, *, tail: bool = True) -> KafkaSource:
    """Build the clickstream source; ``tail=False`` stops at the end of the topics."""
    admin = {"bootstrap.servers": ",".join(config.brokers), **dict(config.kafka_options)}
    return _SegstreamKafkaSource(
        list(config.brokers),
        list(config.input_topics),
        tail=tail,
        add_config=consumer_settings(config),
        batch_size=config.source_batch_size,
        raise_on_errors=False,
        admin_config=admin,
    )


class _KafkaOutPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._errors: list[str] = []

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def write_batch(self, items: list[OutMessage]) -> None:
        started = time.perf_counter()
        producer, on_delivery = self._producer, self._on_delivery
        for msg in items:
            produce_waiting(producer, msg.topic, msg.value, msg.key, headers=msg.headers,
                            on_delivery=on_delivery)
        producer.flush()
        SINK_BATCH_SECONDS.labels("kafka").observe(time.perf_counter() - started)
        if self._errors:
            errors, self._errors = self._errors, []
            msg = f"{len(errors)} messages were not delivered to Kafka, first: {errors[0]}"
            raise SinkError(msg)

    def close(self) -> None:
        self._producer.flush()


class KafkaOutSink(DynamicSink[OutMessage]):
    """Produces :class:`OutMessage` s, one producer per worker."""

    def __init__(self, config: Config) -> None:
        self._settings = {
            "bootstrap.servers": ",".join(config.brokers),
            "linger.ms": str(config.producer_linger_ms),
            **dict(config.kafka_options),
        }

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaOutPartition:
        """Create this worker's producer."""
        try:
            return _KafkaOutPartition(Producer(self._settings))
        except KafkaException as exc:
            msg = f"step {step_id!r}: cannot create a Kafka producer: {exc}"
            raise SinkError(msg) from exc


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


class _RedisPartition(StatelessSinkPartition[X]):
    def __init__(self, store: RedisStore, write: Callable[[RedisStore, list[X]], None],
                 label: str) -> None:
        self._store, self._write, self._label = store, write, label

    def write_batch(self, items: list[X]) -> None:
        started = time.perf_counter()
        self._write(self._store, items)
        SINK_BATCH_SECONDS.labels(self._label).observe(time.perf_counter() - started)

    def close(self) -> None:
        self._store.close()


class _RedisSink(DynamicSink[X]):
    """One Redis connection per worker, writing batches with ``write``."""

    def __init__(self, config: Config, write: Callable[[RedisStore, list[X]], None],
                 label: str) -> None:
        self._url, self._prefix = config.redis_url, config.redis_prefix
        self._write, self._label = write, label

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition[X]:
        """Create this worker's Redis connection."""
        return _RedisPartition(RedisStore.from_url(self._url, self._prefix), self._write,
                               self._label)


def _write_updates(store: RedisStore, items: list[UserUpdate]) -> None:
    written = store.apply(merge_updates(items), updated_at=iso_utc(time.time()))
    REDIS_PROFILE_WRITES.inc(written)


def _write_model_events(store: RedisStore, items: list[ModelEvent]) -> None:
    store.apply_model(items)


class RedisSink(_RedisSink[UserUpdate]):
    """Writes :class:`UserUpdate` s to Redis, one connection per worker."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, _write_updates, "redis")


class RedisModelSink(_RedisSink[ModelEvent]):
    """Writes the models' new versions (cluster descriptions, quality) to Redis."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, _write_model_events, "redis_model")
