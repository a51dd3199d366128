"""End-to-end latency at a controlled rate: produce -> ``segment-changes`` and produce -> Redis.

A tailing ``segstream run`` is started and warmed up on the first records of
the log; then the rest is produced at a fixed rate (events/s) for a fixed time,
each message's send time kept by its ``messageId``. Two observers run meanwhile:

- a consumer of the output topic: a change caused by an event (``cause`` is its
  ``messageId``) is *visible in Kafka* when this consumer receives it;
- a Redis keyspace-notification subscriber on the profile hashes: when a
  user's profile is written, the events it now counts (``events_total``) that
  were not yet seen are *visible in Redis* when that count is read back.

Run with ``output_topic = input_topic`` and no Redis, the same pacing and
observer measure the bare broker's produce -> consume latency: ``make bench``
does so at each rate, as the floor under both paths.

Latency is receive time minus send time, in ms, per change (Kafka) and per
event (Redis). Each observer runs in a process of its own (the producer keeps
this one), all on the machine's clock; messages are parsed for their ids
before the paced sending starts. Figures on Tansu are largely Tansu's fetch
and produce path.

The processes named in ``watch`` (the broker, the worker) have their CPU
sampled while the input is paced: their share of the machine in the first and
the last :data:`CPU_WINDOW_S` seconds. Tansu's grows as its partitions fill
and takes the cores from the worker; the table shows it beside each latency.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from redis import Redis
from segstream.operators.events import Event
from segstream.operators.parse import EventParser
from segstream.state.redis import RedisLayout

from segstream.services import CONSUMER_TUNING, PRODUCER_TUNING

WARMUP_RECORDS = 3000
"""Records produced (unpaced) before measuring, so start-up and model warm-up are excluded."""

CPU_WINDOW_S = 5.0
"""The start and end windows of a paced run whose CPU shares are reported."""


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_shares(samples: Sequence[tuple[float, float]], window_s: float = CPU_WINDOW_S,
               cores: int | None = None) -> tuple[float, float]:
    """Share of the machine (0-1) a process used in the first and last ``window_s``.

    ``samples``: ``(seconds since the start, CPU seconds used)``, in time order,
    the first at the start and the last at the end.

    >>> cpu_shares([(0, 0.0), (5, 1.0), (10, 9.0)], cores=2)
    (0.1, 0.8)
    """
    cores = cores or os.cpu_count() or 1
    end = samples[-1][0]

    def share(since: float, until: float) -> float:
        first = min(samples, key=lambda s: abs(s[0] - since))
        last = min(samples, key=lambda s: abs(s[0] - until))
        span = last[0] - first[0]
        return (last[1] - first[1]) / span / cores if span > 0 else 0.0

    return share(0.0, min(window_s, end)), share(max(0.0, end - window_s), end)


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
    """One paced run: the rate asked for, the rate achieved, and both latencies.

    ``broker``: the bare broker's produce -> consume latency at the same rate
    and for as long, on a fresh topic of its own: the floor under both paths
    (``None``: not measured).
    """

    rate: float
    achieved: float
    kafka: Percentiles
    redis: Percentiles
    kafka_samples: tuple[tuple[float, float], ...] = ()
    """``(send time in seconds since the first send, latency in s)`` per change, by send time."""
    redis_samples: tuple[tuple[float, float], ...] = ()
    """The same per event visible in Redis."""
    broker: Percentiles | None = None
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per watched process: its share of the machine in the first and last :data:`CPU_WINDOW_S`."""


def _kafka_observer(bootstrap: str, topic: str, id_field: str, ready: Any, stop: Any,
                    out: Any) -> None:
    """Record ``(message's id_field, receive time)`` of every message on ``topic`` until ``stop``.

    The list goes on ``out``. Waits for one message at a time, then takes what
    else has arrived without waiting: a ``consume`` of many messages waits for
    its whole count or its timeout, which would add to every latency.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency",
                         "enable.auto.commit": False, **CONSUMER_TUNING})
    metadata = consumer.list_topics(timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions])
    consumer.consume(num_messages=1, timeout=0.5)  # resolves the end offsets before any send
    ready.put("kafka")
    receipts: list[tuple[str, float]] = []
    try:
        while not stop.is_set():
            first = consumer.poll(0.05)
            if first is None:
                continue
            for message in [first, *consumer.consume(num_messages=1000, timeout=0)]:
                now = time.time()
                if message.error() or message.value() is None:
                    continue
                found = orjson.loads(message.value()).get(id_field)
                if isinstance(found, str):
                    receipts.append((found, now))
    finally:
        consumer.close()
        out.put(("kafka", receipts))


def _redis_observer(redis_url: str, prefix: str, ready: Any, stop: Any, out: Any) -> None:
    """Record ``(user, events_total, time)`` whenever a profile hash is written; put them on ``out``.

    Notifications that queued up meanwhile are read together and their counts
    fetched in one pipeline; the time is taken when that reply arrives, so a
    count is never stamped before it could be read (latency is not understated).
    """
    client = Redis.from_url(redis_url)
    client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    layout = RedisLayout(prefix)
    pubsub.psubscribe(f"__keyspace@*__:{layout.user_pattern()}")
    pubsub.get_message(timeout=0.5)  # the subscription confirmation
    ready.put("redis")
    marker = len(layout.user("").encode())
    receipts: list[tuple[str, int, float]] = []
    try:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            keys: dict[bytes, None] = {}
            while message is not None:
                keys[message["channel"].split(b":", 1)[1]] = None
                message = pubsub.get_message(timeout=0.0)
            if not keys:
                continue
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "events_total")
            counts = pipe.execute()
            now = time.time()
            receipts.extend((key[marker:].decode(), int(counted), now)
                            for key, counted in zip(keys, counts, strict=True)
                            if counted is not None)
    finally:
        pubsub.close()
        client.close()
        out.put(("redis", receipts))


def redis_latencies(receipts: Sequence[tuple[str, int, float]], sends: dict[str, list[float]],
                     seen: dict[str, int]) -> list[tuple[float, float]]:
    """Attribute each rise of a user's ``events_total`` to their sends, in send order.

    ``seen``: what each user's profile already counted before the run.
    Returns ``(send time, latency)`` per event.

    >>> redis_latencies([("u1", 2, 10.5), ("u1", 3, 11.0)], {"u1": [10.0, 10.25]}, {"u1": 1})
    [(10.0, 0.5), (10.25, 0.75)]
    """
    out = []
    counted = dict(seen)
    next_send = dict.fromkeys(sends, 0)
    for user, total, at in receipts:
        queue = sends.get(user)
        if queue is None:
            continue
        fresh = total - counted.get(user, 0)
        while fresh > 0 and next_send[user] < len(queue):
            sent_at = queue[next_send[user]]
            out.append((sent_at, at - sent_at))
            next_send[user] += 1
            counted[user] = counted.get(user, 0) + 1
            fresh -= 1
    return out


def paced_run(bootstrap: str, input_topic: str, output_topic: str, redis_url: str | None,
              prefix: str, records: Sequence[tuple[bytes, bytes]], *, rate: float, seconds: float,
              settle_s: float = 3.0, id_field: str = "cause",
              watch: Mapping[str, int] | None = None) -> LatencyRun:
    """Produce ``records`` at ``rate`` for ``seconds`` while the observers measure.

    The worker must already be tailing ``input_topic`` and be warmed up; each
    user's events already counted in Redis are taken as seen. The observers run
    in processes of their own: sharing this one's interpreter lock with the
    producer, they fell behind at a few thousand events/s and their own queue
    showed up as latency (and the producer missed its rate).

    The bare broker's own latency: ``output_topic = input_topic``,
    ``id_field="messageId"`` and no ``redis_url`` (no worker needed).
    ``watch``: processes (name: pid) whose CPU is sampled about every second.
    """
    count = min(len(records), int(rate * seconds))
    paced = records[:count]
    parser = EventParser()
    ids: list[tuple[str, str] | None] = []  # (message id, user) per record, before the clock starts
    for key, value in paced:
        event = parser.parse(value, key=key)
        ids.append((event.message_id, event.key) if isinstance(event, Event) else None)
    users = sorted({found[1] for found in ids if found is not None})
    seen: dict[str, int] = {}
    if redis_url is not None:
        with Redis.from_url(redis_url) as client:
            pipe = client.pipeline(transaction=False)
            for user in users:
                pipe.hget(RedisLayout(prefix).user(user), "events_total")
            seen = {user: int(counted or 0)
                    for user, counted in zip(users, pipe.execute(), strict=True)}
    context = multiprocessing.get_context("spawn")
    ready, results, stop = context.Queue(), context.Queue(), context.Event()
    observers = [context.Process(target=_kafka_observer, daemon=True,
                                 args=(bootstrap, output_topic, id_field, ready, stop, results))]
    if redis_url is not None:
        observers.append(context.Process(target=_redis_observer, daemon=True,
                                         args=(redis_url, prefix, ready, stop, results)))
    for process in observers:
        process.start()
    for _ in observers:
        ready.get(timeout=60)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_TUNING})
    sent_by_id: dict[str, float] = {}
    sent_by_user: dict[str, list[float]] = defaultdict(list)
    watch = dict(watch or {})
    cpu_samples: dict[str, list[tuple[float, float]]] = {name: [] for name in watch}

    def sample_cpu(at: float) -> None:
        for name, pid in watch.items():
            cpu_samples[name].append((at - started, process_cpu_s(pid)))

    started = time.time()
    sample_cpu(started)
    next_sample = started + 1.0
    for i, ((key, value), found) in enumerate(zip(paced, ids, strict=True)):
        wait = started + i / rate - time.time()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        if now >= next_sample:
            sample_cpu(now)
            next_sample = now + 1.0
        if found is not None:  # a dead letter never reaches the profile
            sent_by_id[found[0]] = now
            sent_by_user[found[1]].append(now)
        producer.produce(input_topic, value, key)
        producer.poll(0)
    producer.flush()
    sample_cpu(time.time())
    achieved = count / (time.time() - started)
    time.sleep(settle_s)
    stop.set()
    received = dict(results.get(timeout=60) for _ in observers)
    for process in observers:
        process.join(10)
    kafka_latency = sorted((sent_by_id[found], at - sent_by_id[found])
                           for found, at in received["kafka"] if found in sent_by_id)
    redis_latency = redis_latencies(received.get("redis", []), sent_by_user, seen)
    return LatencyRun(
        rate, achieved,
        Percentiles.of([latency for _at, latency in kafka_latency]),
        Percentiles.of([latency for _at, latency in redis_latency]),
        tuple((at - started, latency) for at, latency in kafka_latency),
        tuple((at - started, latency) for at, latency in redis_latency),
        cpu={name: cpu_shares(samples) for name, samples in cpu_samples.items()},
    )
