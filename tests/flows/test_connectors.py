"""The source's end of a bounded run: a partition ends only once it stayed at its end."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError as ConfluentKafkaError
from segstream.flows import connectors
from segstream.flows.connectors import END_GRACE_S, _PatientPartition, kafka_source

from segstream.config import Config


class _Message:
    def __init__(self, offset: int | None, error: ConfluentKafkaError | None = None) -> None:
        self._offset, self._error = offset, error

    def error(self) -> ConfluentKafkaError | None:
        return self._error

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % (self._offset or 0)

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int | None:
        return self._offset

    def headers(self) -> None:
        return None

    def latency(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


END = _Message(None, ConfluentKafkaError(ConfluentKafkaError._PARTITION_EOF))  # noqa: SLF001


class _Consumer:
    """Hands out prepared ``consume`` results: a stand-in for librdkafka's batching only."""

    def __init__(self, batches: list[list[_Message]], high: int = -1001) -> None:
        self.batches = batches
        self.high = high

    def consume(self, _size: int, _timeout: float) -> list[_Message]:
        return self.batches.pop(0) if self.batches else []

    def get_watermark_offsets(self, _partition: Any, cached: bool = False) -> tuple[int, int]:
        assert cached, "the health check must not make a request per poll"
        return -1001, self.high


def partition(batches: list[list[_Message]], high: int = -1001) -> Any:
    part = _PatientPartition.__new__(_PatientPartition)
    part._consumer, part._batch_size, part._raise_on_errors = _Consumer(batches, high), 100, False
    part._topic, part._part_idx, part._offset = "t", 0, 0
    return part


def test_an_empty_poll_behind_the_brokers_end_says_input_is_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll that brings nothing while the broker's last answer put the end past the position
    tells the health that input waits; consuming clears it; at the end nothing waits."""
    from segstream.health import Health  # noqa: PLC0415

    health = Health(stall_s=0.0)
    monkeypatch.setattr(connectors, "HEALTH", health)
    part = partition([[_Message(0), _Message(1)], [], []], high=10)
    part.next_batch()
    assert not health._waiting
    part.next_batch()
    assert health._waiting
    part._consumer.high = 2  # the position is the end: a quiet topic
    health.progress()
    part.next_batch()
    assert not health._waiting


@pytest.mark.integration
def test_the_cached_high_watermark_is_the_brokers_end(kafka_broker: Any,
                                                      topic_factory: Any) -> None:
    """After a fetch, the partition knows the topic's end without asking the broker again."""
    topic = topic_factory("hw")
    kafka_broker.produce(topic, [(None, b"%d" % i) for i in range(50)])
    source = kafka_source(Config(brokers=(kafka_broker.bootstrap,), input_topics=(topic,),
                                 source_batch_size=10), tail=True)
    part = source.build_part("clickstream", f"0-{topic}", None)
    try:
        taken: list[Any] = []
        deadline = time.monotonic() + 15
        while not taken and time.monotonic() < deadline:
            taken += part.next_batch()
            time.sleep(0.01)
        assert taken and part._high_watermark() == 50
    finally:
        part.close()


def test_an_end_that_more_data_follows_does_not_stop_the_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(connectors.time, "monotonic", lambda: now[0])
    part = partition([[_Message(0), END, _Message(1)], [END], [], [_Message(2), END]])
    assert [m.offset for m in part.next_batch()] == [0, 1]  # nothing after the end is dropped
    assert part.next_batch() == []
    now[0] += END_GRACE_S / 2
    assert part.next_batch() == []
    assert [m.offset for m in part.next_batch()] == [2]  # more came: the end was not the end
    now[0] += END_GRACE_S / 2
    assert part.next_batch() == []  # the new end has not lasted long enough
    now[0] += END_GRACE_S
    with pytest.raises(StopIteration):
        part.next_batch()
    assert part.snapshot() == 3  # resume after the last message


def test_a_source_built_to_end_after_another_waits_for_its_partitions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 0's learn topic stays open while its input is read, then ends once quiet."""
    now = [0.0]
    monkeypatch.setattr(connectors.time, "monotonic", lambda: now[0])
    config = Config(brokers=("127.0.0.1:1",))
    clicks = kafka_source(config, tail=False)
    learn = kafka_source(config, tail=False, topics=["learn"], after=clicks)
    assert isinstance(clicks, connectors._SegstreamKafkaSource)  # noqa: SLF001
    assert isinstance(learn, connectors._SegstreamKafkaSource)  # noqa: SLF001
    input_part, learn_part = partition([[END]]), partition([[END]])
    input_part.source = clicks
    learn_part.source, learn_part.after = learn, clicks
    clicks.reading, learn.reading = 1, 1  # as build_part counts them
    assert input_part.next_batch() == learn_part.next_batch() == []
    now[0] += END_GRACE_S
    assert learn_part.next_batch() == []  # quiet, but the input is still being read
    with pytest.raises(StopIteration):
        input_part.next_batch()
    assert clicks.reading == 0
    with pytest.raises(StopIteration):
        learn_part.next_batch()
    assert learn.reading == 0
    with pytest.raises(TypeError):
        kafka_source(config, topics=["learn"], after=object())  # type: ignore[arg-type]
