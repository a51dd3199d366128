"""The epoch sinks: one partition per process, writes that do not wait, waits at epoch closes."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from segstream.flows.connectors import (
    SINK_PARTITIONS,
    KafkaOutSink,
    OutMessage,
    RedisSink,
    SinkError,
    sink_partition,
)
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.errors import ConfigError
from segstream.services import RedisServer, TansuBroker, free_port


@given(st.integers(1, SINK_PARTITIONS))
def test_every_partition_has_one_process_and_each_process_writes_its_own(processes: int) -> None:
    """Whatever the process count, a stored partition is listed (resume) and output stays local."""
    every = sorted(sink_partition(i) for i in range(SINK_PARTITIONS))
    listed: list[str] = []
    for process_id in range(processes):
        sink = KafkaOutSink(Config(), process_id=process_id, processes=processes)
        parts = sink.list_parts()
        own = every[sink.part_fn("") % len(every)]
        assert own == sink_partition(process_id) and own in parts
        listed += parts
    assert sorted(listed) == every


@pytest.mark.parametrize(("process_id", "processes", "field"), [
    (0, 0, "--addresses"), (0, SINK_PARTITIONS + 1, "--addresses"),
    (2, 2, "--process-id"), (-1, 2, "--process-id"),
])
def test_a_process_outside_the_partitions_fails_naming_the_option(
        process_id: int, processes: int, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisSink(Config(), process_id=process_id, processes=processes)
    assert err.value.field == field


def _messages(topic: str, count: int) -> list[OutMessage]:
    return [OutMessage(topic, b"u%d" % i, b'{"n":%d}' % i) for i in range(count)]


@pytest.mark.integration
def test_kafka_sink_delivers_at_the_epoch_close_not_per_batch(
        kafka_broker: TansuBroker, topic_factory: Callable[..., str]) -> None:
    """A batch is handed to librdkafka and left there; the epoch's close waits for its delivery."""
    topic = topic_factory("sink")
    # A long linger keeps the batch in the producer until something flushes it.
    sink = KafkaOutSink(Config(brokers=(kafka_broker.bootstrap,), producer_linger_ms=60_000))
    part = sink.build_part("kafka_out", sink.list_parts()[0], None)
    part.write_batch(_messages(topic, 5))
    part.write_batch(_messages(topic, 3))
    assert sink.wait(0) == 8, "write_batch waited for delivery"
    part.snapshot()  # the epoch closes
    assert sink.wait(0) == 0
    values = [r.value for r in kafka_broker.read_topic(topic)]
    assert values == [m.value for m in _messages(topic, 5) + _messages(topic, 3)]


def test_kafka_sink_raises_at_the_epoch_close_when_delivery_fails() -> None:
    """Undeliverable output stops the worker before Bytewax commits the epoch."""
    config = Config(brokers=(f"127.0.0.1:{free_port()}",),  # nothing listens there
                    kafka_options=(("message.timeout.ms", "300"),))
    sink = KafkaOutSink(config)
    part = sink.build_part("kafka_out", sink.list_parts()[0], None)
    part.write_batch(_messages("nowhere", 2))
    with pytest.raises(SinkError, match="2 messages were not delivered"):
        part.snapshot()


def _update(user: str, version: int) -> UserUpdate:
    return UserUpdate(user, version, version, orjson.dumps({"version": str(version)}), ())


@pytest.mark.integration
def test_redis_sink_reads_a_batch_s_replies_when_the_next_is_sent(
        redis_server: RedisServer, redis_prefix: str) -> None:
    """Batches land in order without the worker waiting for each; the epoch close reads the last."""
    sink = RedisSink(Config(redis_url=redis_server.url, redis_prefix=redis_prefix))
    part = sink.build_part("redis_out", sink.list_parts()[0], None)
    part.write_batch([_update("a", 1), _update("b", 1)])
    part.write_batch([_update("a", 2)])
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    deadline = time.monotonic() + 5
    while raw.hget(f"{redis_prefix}user:a", "version") != "2":
        assert time.monotonic() < deadline, "the second batch did not land"
        time.sleep(0.01)
    part.snapshot()
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.user_ids() == ["a", "b"]
    assert store.profile("a")["version"] == "2"


@pytest.mark.integration
def test_redis_sink_failure_raises_by_the_epoch_close(redis_server: RedisServer,
                                                      redis_prefix: str) -> None:
    """A batch Redis refused surfaces as SinkError, naming the sink, before the epoch commits."""
    redis.Redis.from_url(redis_server.url).set(f"{redis_prefix}user:a", "not a hash")
    sink = RedisSink(Config(redis_url=redis_server.url, redis_prefix=redis_prefix))
    part = sink.build_part("redis_out", sink.list_parts()[0], None)
    part.write_batch([_update("a", 1)])
    with pytest.raises(SinkError, match="redis: Redis failed a batch: ResponseError: WRONGTYPE"):
        part.snapshot()


@pytest.mark.integration
def test_the_last_partition_to_close_delivers_and_releases_the_connection(
        redis_server: RedisServer, redis_prefix: str, kafka_broker: TansuBroker,
        topic_factory: Callable[..., str]) -> None:
    """At the end of input each closing partition waits; the last one closes the connection."""
    raw = redis.Redis.from_url(redis_server.url)
    before = len(raw.client_list())
    sink = RedisSink(Config(redis_url=redis_server.url, redis_prefix=redis_prefix))
    first, second = (sink.build_part("redis_out", name, None) for name in sink.list_parts()[:2])
    first.write_batch([_update("a", 1)])
    assert len(raw.client_list()) == before + 1
    first.close()
    assert raw.hget(f"{redis_prefix}user:a", "version") == b"1"
    assert len(raw.client_list()) == before + 1, "released while a partition is open"
    second.close()
    deadline = time.monotonic() + 5
    while len(raw.client_list()) != before:
        assert time.monotonic() < deadline, "the sink kept its Redis connection"
        time.sleep(0.01)

    topic = topic_factory("sink")
    kafka = KafkaOutSink(Config(brokers=(kafka_broker.bootstrap,), producer_linger_ms=60_000))
    parts = [kafka.build_part("kafka_out", name, None) for name in kafka.list_parts()[:2]]
    parts[1].write_batch(_messages(topic, 3))
    for part in parts:
        part.close()
    assert [r.value for r in kafka_broker.read_topic(topic)] == [m.value for m in _messages(topic, 3)]


def _failures(error: str) -> float:
    from segstream.metrics import DEAD_LETTER_FAILURES  # noqa: PLC0415

    return DEAD_LETTER_FAILURES.labels(error)._value.get()


def _dead_letter(topic: str, size: int) -> OutMessage:
    return OutMessage(topic, b"k", b"x" * size, [("segstream.reason", b"oversized"),
                                                 ("segstream.source", b"clicks/0/7")],
                      best_effort=True)


@pytest.mark.integration
def test_a_dead_letter_the_producer_refuses_is_counted_and_logged_not_fatal(
        kafka_broker: TansuBroker, topic_factory: Callable[..., str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Scenario: a dead letter over the producer's message.max.bytes (librdkafka refuses it at
    once with MSG_SIZE_TOO_LARGE, which used to stop the worker). We expect it counted and logged
    with its source, and the output around it delivered; the same size as ordinary output stops."""
    topic = topic_factory("dlq")
    sink = KafkaOutSink(Config(brokers=(kafka_broker.bootstrap,)))
    part = sink.build_part("kafka_out", sink.list_parts()[0], None)
    before = _failures("MSG_SIZE_TOO_LARGE")
    part.write_batch([*_messages(topic, 1), _dead_letter(topic, 2_000_000), *_messages(topic, 1)])
    part.snapshot()
    assert _failures("MSG_SIZE_TOO_LARGE") - before == 1
    assert "clicks/0/7 (reason oversized, 2000000 bytes) could not be produced" in caplog.text
    assert len(kafka_broker.read_topic(topic)) == 2
    with pytest.raises(Exception, match="MSG_SIZE_TOO_LARGE|too large"):
        part.write_batch([OutMessage(topic, b"k", b"x" * 2_000_000)])


def test_a_dead_letter_that_fails_delivery_is_counted_not_fatal() -> None:
    """A dead letter the broker never acknowledges is counted at the epoch close, which succeeds."""
    config = Config(brokers=(f"127.0.0.1:{free_port()}",),  # nothing listens there
                    kafka_options=(("message.timeout.ms", "300"),))
    sink = KafkaOutSink(config)
    part = sink.build_part("kafka_out", sink.list_parts()[0], None)
    before = _failures("_MSG_TIMED_OUT")
    part.write_batch([_dead_letter("dlq", 10)])
    part.snapshot()  # no SinkError: the epoch may commit
    assert _failures("_MSG_TIMED_OUT") - before == 1
