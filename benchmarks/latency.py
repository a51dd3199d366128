"""End-to-end latency at a controlled rate: produce -> ``segment-changes`` and produce -> Redis.

A tailing ``segstream run`` is started and warmed up on the first records of
the log; then the rest is produced at a fixed rate (events/s) for a fixed time,
each message's send time kept by its ``messageId``. Two observers run meanwhile:

- a consumer of the output topic: a change caused by an event (``cause`` is its
  ``messageId``) is *visible in Kafka* when this consumer receives it;
- a Redis keyspace-notification subscriber on the profile hashes: when a
  user's profile is written, the events it now counts (``events_total``) that
  were not yet seen are *visible in Redis* at that moment.

Latency is receive time minus send time, in ms, per change (Kafka) and per
event (Redis). Both observers run in this process, on the same clock as the
producer. Figures on Tansu are largely Tansu's fetch and produce path.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from redis import Redis
from segstream.operators.events import Event
from segstream.operators.parse import EventParser
from segstream.state.redis import RedisLayout

from segstream.services import CONSUMER_TUNING, PRODUCER_TUNING

WARMUP_RECORDS = 3000
"""Records produced (unpaced) before measuring, so start-up and model warm-up are excluded."""


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in ms over ``count`` observations."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        """Nearest-rank percentiles of ``samples`` (seconds), in ms."""
        if not samples:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        ordered = sorted(samples)

        def rank(p: float) -> float:
            return 1000.0 * ordered[max(1, math.ceil(p * len(ordered))) - 1]

        return cls(len(ordered), rank(0.50), rank(0.95), rank(0.99), 1000.0 * ordered[-1])


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """One paced run: the rate asked for, the rate achieved, and both latencies."""

    rate: float
    achieved: float
    kafka: Percentiles
    redis: Percentiles
    kafka_samples: tuple[tuple[float, float], ...] = ()
    """``(seconds since the first send, latency in s)`` per change, in arrival order."""
    redis_samples: tuple[tuple[float, float], ...] = ()
    """The same per event visible in Redis."""


class _Sent:
    """Send times by message id, and per user in send order (for Redis attribution)."""

    def __init__(self) -> None:
        self.by_id: dict[str, float] = {}
        self.by_user: dict[str, deque[float]] = defaultdict(deque)
        self.seen: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()


def _kafka_observer(bootstrap: str, topic: str, sent: _Sent, out: list[tuple[float, float]],
                    stop: threading.Event) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency",
                         "enable.auto.commit": False, **CONSUMER_TUNING})
    metadata = consumer.list_topics(timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions])
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=1000, timeout=0.05):
                now = time.time()
                if message.error() or message.value() is None:
                    continue
                cause = orjson.loads(message.value()).get("cause")
                at = sent.by_id.get(cause)
                if at is not None:
                    out.append((at, now - at))
    finally:
        consumer.close()


def _redis_observer(redis_url: str, prefix: str, sent: _Sent, out: list[tuple[float, float]],
                    stop: threading.Event) -> None:
    client = Redis.from_url(redis_url)
    client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    layout = RedisLayout(prefix)
    pubsub.psubscribe(f"__keyspace@*__:{layout.user_pattern()}")
    marker = layout.user("").encode()
    try:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message is None:
                continue
            now = time.time()
            key = message["channel"].split(b":", 1)[1]
            user = key[len(marker):].decode()
            counted = client.hget(key, "events_total")
            if counted is None:
                continue
            with sent.lock:
                queue = sent.by_user.get(user)
                fresh = int(counted) - sent.seen[user]
                while queue and fresh > 0:
                    at = queue.popleft()
                    out.append((at, now - at))
                    fresh -= 1
                    sent.seen[user] += 1
    finally:
        pubsub.close()
        client.close()


def paced_run(bootstrap: str, input_topic: str, output_topic: str, redis_url: str, prefix: str,
              records: Sequence[tuple[bytes, bytes]], *, rate: float, seconds: float,
              settle_s: float = 3.0) -> LatencyRun:
    """Produce ``records`` at ``rate`` for ``seconds`` while both observers measure.

    The worker must already be tailing ``input_topic`` and be warmed up; each
    user's events already counted in Redis are taken as seen.
    """
    sent = _Sent()
    count = min(len(records), int(rate * seconds))
    users = sorted({key.decode() for key, _value in records[:count]})
    with Redis.from_url(redis_url) as client:
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.hget(RedisLayout(prefix).user(user), "events_total")
        for user, counted in zip(users, pipe.execute(), strict=True):
            sent.seen[user] = int(counted or 0)
    kafka_latency: list[tuple[float, float]] = []
    redis_latency: list[tuple[float, float]] = []
    stop = threading.Event()
    observers = [
        threading.Thread(target=_kafka_observer, daemon=True,
                         args=(bootstrap, output_topic, sent, kafka_latency, stop)),
        threading.Thread(target=_redis_observer, daemon=True,
                         args=(redis_url, prefix, sent, redis_latency, stop)),
    ]
    for thread in observers:
        thread.start()
    time.sleep(1.0)  # both subscribed before the first message
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_TUNING})
    parser = EventParser()
    started = time.time()
    for i, (key, value) in enumerate(records[:count]):
        due = started + i / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        event = parser.parse(value, key=key)
        with sent.lock:
            now = time.time()
            if isinstance(event, Event):  # a dead letter never reaches the profile
                sent.by_id[event.message_id] = now
                sent.by_user[event.key].append(now)
        producer.produce(input_topic, value, key)
        producer.poll(0)
    producer.flush()
    achieved = count / (time.time() - started)
    time.sleep(settle_s)
    stop.set()
    for thread in observers:
        thread.join(5)
    return LatencyRun(
        rate, achieved,
        Percentiles.of([latency for _at, latency in kafka_latency]),
        Percentiles.of([latency for _at, latency in redis_latency]),
        tuple((at - started, latency) for at, latency in kafka_latency),
        tuple((at - started, latency) for at, latency in redis_latency),
    )
