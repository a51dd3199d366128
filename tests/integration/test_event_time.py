"""Event time through the real broker and redis-server: timers fire by the watermark, idle users leave."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream.config import DEFAULT_SEGMENTS_FILE
from segstream.services import RedisServer, TansuBroker, clean_env
from segstream.state.redis import RedisStore
from tests.integration.helpers import change_docs, make_config, start_worker, worker_env

pytestmark = pytest.mark.integration
T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
MIN = 60


def event(user: str, name: str, second: float, **properties: Any) -> dict[str, Any]:
    stamp = (T0 + timedelta(seconds=second)).isoformat(timespec="milliseconds")
    return {"type": "track", "event": name, "userId": user, "messageId": f"{user}-{second}",
            "timestamp": stamp.replace("+00:00", "Z"), "properties": properties}


def browse_and_add(user: str, start: float) -> list[dict[str, Any]]:
    views = [event(user, "Product Viewed", start + 30 * i) for i in range(5)]
    return [*views, event(user, "Product Added", start + 180)]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cart_abandoner_fires_by_event_time_during_a_1000x_replay(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str, tmp_path: Path,
) -> None:
    """Scenario: a tailing worker; a log replayed at 1000x; the trigger's timer is 1 hour.

    `cart` views five products and adds one to the cart, then goes silent;
    `buyer` does the same and buys 30 minutes later; `clock` keeps browsing for
    two hours of event time. We expect `cart` to enter cart_abandoner exactly
    once, at the deadline in event time, while the replay is still running
    (woken by a tick, since `cart` sends nothing more), and `buyer` never.
    """
    segments = tmp_path / "segments.toml"
    segments.write_text(DEFAULT_SEGMENTS_FILE.read_text().replace(
        'no_purchase_for = "24h"', 'no_purchase_for = "1h"'))
    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq"))
    log = [*browse_and_add("cart", 0), *browse_and_add("buyer", 10),
           event("buyer", "Order Completed", 30 * MIN, revenue=20),
           *(event("clock", "Page Viewed", 2 * MIN * i) for i in range(61))]
    log.sort(key=lambda doc: doc["timestamp"])
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in log))

    env = worker_env(config, tmp_path / "rec") | {"SEGSTREAM_SEGMENTS_FILE": str(segments)}
    worker = start_worker(env, log=tmp_path / "w.log")
    try:
        time.sleep(2)  # let the worker assign its partitions before the replay starts
        started = time.time()
        replay = subprocess.run(
            [sys.executable, "-m", "segstream.cli", "replay", str(path), "--topic",
             config.input_topics[0], "--brokers", kafka_broker.bootstrap, "--speed", "1000",
             "--no-progress"],
            env=clean_env({}), capture_output=True, text=True, timeout=120, check=False)
        finished = time.time()
        assert replay.returncode == 0, replay.stderr[-2000:]

        def abandoners() -> list[dict[str, Any]]:
            docs = change_docs(kafka_broker.read_topic(config.output_topic), drop=())
            return [d for d in docs if d["segment"] == "cart_abandoner"]

        found = wait_for(abandoners, 30, "the cart_abandoner change")
        time.sleep(1)  # anything that would follow it
        found = abandoners()
    finally:
        worker.terminate()
        worker.wait(30)

    deadline = T0 + timedelta(seconds=180 + 3600)
    assert [(d["user_id"], d["change"], d["event_time"], d["cause"]) for d in found] == [
        ("cart", "enter", deadline.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
         "timer:cart_abandoner")]
    emitted = datetime.fromisoformat(found[0]["emitted_at"]).timestamp()
    # Event time runs 1000x wall time: the deadline (+ the 30 s lateness) is
    # passed about 3.8 s into the 7.2 s replay; the clock ticks every 0.2 s.
    due_after = (3600 + 180 + 30) / 1000
    assert started + due_after - 0.5 <= emitted <= finished, (emitted - started, finished - started)
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.members("cart_abandoner") == {"cart"}
    assert store.profile("cart")["cart_abandoned_total"] == "1"
    assert store.profile("buyer")["cart_abandoned_total"] == "0"


def test_idle_users_are_evicted_from_state_and_redis(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str, tmp_path: Path,
) -> None:
    """Scenario: state TTL of 1 hour; `idle` shows up once, `returner` twice 3 h apart, `busy` keeps on.

    We expect `idle` to leave its segments (exit changes) and vanish from
    Redis, `returner` to come back clean (one event, higher versions), and
    `busy` to stay, in a bounded run that fires what is due at its end.
    """
    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq"))
    log = [event("idle", "Product Viewed", 0), event("returner", "Product Viewed", 1),
           *(event("busy", "Page Viewed", 10 * MIN * i) for i in range(25)),
           event("returner", "Page Viewed", 3 * 3600 + 5)]
    log.sort(key=lambda doc: doc["timestamp"])
    kafka_broker.produce(config.input_topics[0],
                         [(doc["userId"].encode(), orjson.dumps(doc)) for doc in log])
    env = worker_env(config, "") | {"SEGSTREAM_STATE_TTL_S": "3600"}
    worker = start_worker(env, "--until-end", log=tmp_path / "w.log")
    assert worker.wait(120) == 0, (tmp_path / "w.log").read_text()[-3000:]

    docs = change_docs(kafka_broker.read_topic(config.output_topic))
    idle = [(d["segment"], d["change"], d["cause"]) for d in docs if d["user_id"] == "idle"]
    assert idle == [
        ("journey:awareness", "enter", "idle-0"), ("journey:consideration", "enter", "idle-0"),
        ("new_user", "enter", "idle-0"), ("needs_enrichment", "enter", "idle-0"),
        # Its session ends 30 min later: a feature snapshot (the clusterer is not warm yet).
        ("cluster:unassigned", "enter", "timer:session_end"),
        # Eviction: the journey, the model segments, then the rules in file order.
        ("journey:consideration", "exit", "timer:evict"), ("cluster:unassigned", "exit", "timer:evict"),
        ("new_user", "exit", "timer:evict"), ("needs_enrichment", "exit", "timer:evict"),
    ]
    returner = [d for d in docs if d["user_id"] == "returner"]
    versions = [d["version"] for d in returner]
    assert versions == sorted(set(versions))
    assert [(d["segment"], d["change"], d["cause"]) for d in returner] == [
        ("journey:awareness", "enter", "returner-1"), ("journey:consideration", "enter", "returner-1"),
        ("new_user", "enter", "returner-1"), ("needs_enrichment", "enter", "returner-1"),
        ("cluster:unassigned", "enter", "timer:session_end"),
        ("journey:consideration", "exit", "timer:evict"), ("cluster:unassigned", "exit", "timer:evict"),
        ("new_user", "exit", "timer:evict"), ("needs_enrichment", "exit", "timer:evict"),
        ("journey:awareness", "enter", "returner-10805"), ("new_user", "enter", "returner-10805"),
        ("needs_enrichment", "enter", "returner-10805"),
        ("cluster:unassigned", "enter", "timer:session_end"),  # busy's events end the session
    ]
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.profile("idle") == {}
    assert all("idle" not in members for members in store.segments().values())
    assert store.profile("returner")["events_total"] == "1"
    # Its last change is the session-end snapshot's cluster change; the snapshot
    # also reserved the versions after it (churn band, journey, one per rule:
    # 1 + 1 + 7), and the profile carries the user's version, reserved ones included.
    assert store.profile("returner")["version"] == str(versions[-1] + 9)
    assert store.profile("busy")["events_total"] == "25"
    assert store.user_ids() == ["busy", "returner"]
