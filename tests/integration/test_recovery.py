"""Crash recovery of `segstream run`: SIGKILL mid-stream, restart, same outputs."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from segstream.services import RedisServer, TansuBroker, free_port
from segstream.state.redis import RedisStore

from tests.oracle.batch_features import ORACLE_SEGMENTS

from .helpers import change_docs, make_config, start_worker, wait_processed, worker_env

pytestmark = pytest.mark.integration

NAMES = ["Page Viewed", "Product Viewed", "Products Searched", "Product Added",
         "Checkout Started", "Order Completed"]


def clickstream(n: int, users: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        ts = start + timedelta(seconds=i * 7 + rng.randrange(5))
        doc = {"type": "track", "event": rng.choice(NAMES), "userId": user, "messageId": f"m{i}",
               "timestamp": ts.isoformat().replace("+00:00", "Z"),
               "properties": {"revenue": rng.randrange(1, 100)}}
        out.append((user.encode(), orjson.dumps(doc)))
        if i % 997 == 0:
            out.append((b"junk", b"{broken json"))
    return out


MODEL_KINDS = ("cluster:", "churn:")


def redis_state(url: str, prefix: str) -> tuple[dict, dict]:
    store = RedisStore.from_url(url, prefix)
    profiles, models = {}, {}
    for user in store.user_ids():
        profile = store.profile(user)
        profile.pop("updated_at")  # wall-clock time of the write, differs between runs
        # The RFM score ranks a user against the population as of the last rank
        # refresh (every 1 % of changes, counted since the process started), so
        # a resumed run may read ranks one refresh apart; it must still be a score.
        assert profile.pop("rfm") in {""} | {f"{r}{f}{m}" for r in "12345" for f in "12345" for m in "12345"}
        # The models' outputs depend on what they had learned when the user's
        # snapshot came, which depends on timing: the same models, not the same
        # decisions (docs/models.md). Redis must still agree with itself.
        cluster, band = profile.pop("cluster"), profile.pop("churn_band")
        assert cluster != "" and profile.pop("model_version").isdigit()
        profile.pop("churn_p")
        models[user] = (cluster, band)
        profiles[user] = profile
    segments = {k: v for k, v in store.segments().items() if v}
    for user, (cluster, band) in models.items():
        assert {k for k, v in segments.items() if k.startswith("cluster:") and user in v} == {
            f"cluster:{cluster}"}
        assert {k for k, v in segments.items() if k.startswith("churn:") and user in v} == (
            {f"churn:{band}"} if band else set())
    store.close()
    return profiles, {k: v for k, v in segments.items() if not k.startswith(MODEL_KINDS)}


def test_sigkill_mid_stream_then_resume(kafka_broker: TansuBroker, redis_server: RedisServer,
                                        topic_factory: Callable[..., str], tmp_path: Path) -> None:
    """Scenario: the worker is SIGKILLed while events stream in, then restarted on its recovery dir.

    We expect Redis to end equal to an uninterrupted run's, the set of
    (user_id, version) on the topic to equal the uninterrupted run's, and no
    (user_id, version) to carry two different contents.
    """
    events = clickstream(12000, users=300, seed=3)
    first, second = events[:6000], events[6000:]
    input_topic = topic_factory("clicks", partitions=2)
    crashy = make_config(kafka_broker, redis_server.url, "crashy:", input_topic,
                         topic_factory("out-crashy"), topic_factory("dlq-crashy"))
    clean = make_config(kafka_broker, redis_server.url, "clean:", input_topic,
                        topic_factory("out-clean"), topic_factory("dlq-clean"))

    kafka_broker.produce(input_topic, first)
    port = free_port()
    # Journey and rule changes are compared exactly, for every user: with segments
    # that depend on the user's own events only. The shipped file (a rule on a
    # population statistic, a transition on churn_p) is killed at random points in
    # test_faults.py, where the users whose decisions read others are counted.
    own_only = {"SEGSTREAM_SEGMENTS_FILE": str(ORACLE_SEGMENTS)}
    env = worker_env(crashy, tmp_path / "recovery", metrics_port=port,
                     snapshot_interval_s=0.3) | own_only
    worker = start_worker(env, log=tmp_path / "worker.log")
    try:
        wait_processed(port, len(first), worker)
        time.sleep(1.0)  # let a few snapshots land

        def trickle() -> None:  # the rest arrives at ~3000 events/s, as a live stream would
            for i in range(0, len(second), 300):
                kafka_broker.produce(input_topic, second[i:i + 300])
                time.sleep(0.1)

        producer = threading.Thread(target=trickle)
        producer.start()
        at_kill = wait_processed(port, len(first) + len(second) // 3, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        producer.join()
    finally:
        if worker.poll() is None:
            worker.kill()
    assert at_kill < len(events), "the kill must land mid-stream"
    # Only the journey and rule changes are compared: the models' changes differ
    # between runs, so a crashy run may emit more of them before the kill than a
    # clean run does in all.
    before_restart = {(c["user_id"], c["version"])
                      for c in change_docs(kafka_broker.read_topic(crashy.output_topic))
                      if not c["segment"].startswith(MODEL_KINDS)}

    resumed = start_worker(env, "--until-end", log=tmp_path / "worker.log")
    assert resumed.wait(120) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    uninterrupted = start_worker(worker_env(clean, tmp_path / "recovery-clean") | own_only, "--until-end",
                                 log=tmp_path / "clean.log")
    assert uninterrupted.wait(120) == 0, (tmp_path / "clean.log").read_text()[-3000:]

    all_clean = change_docs(kafka_broker.read_topic(clean.output_topic))
    all_crashy = change_docs(kafka_broker.read_topic(crashy.output_topic))
    # Journey and rule changes are a function of the input: exactly the same.
    # Cluster and churn-band changes are the models' decisions (see redis_state);
    # each feature snapshot reserves their versions, so they never shift the others.
    clean_changes = [c for c in all_clean if not c["segment"].startswith(MODEL_KINDS)]
    crashy_changes = [c for c in all_crashy if not c["segment"].startswith(MODEL_KINDS)]
    expected = {(c["user_id"], c["version"]): c for c in clean_changes}
    assert before_restart < expected.keys(), "the resumed run must have had changes left to write"
    assert len(expected) == len(clean_changes)  # an uninterrupted run has no duplicates
    seen: dict[tuple[str, int], dict] = {}
    for change in crashy_changes:
        key = (change["user_id"], change["version"])
        assert seen.setdefault(key, change) == change, f"{key} has two contents"
    assert seen.keys() == expected.keys()
    assert seen == expected
    for model_change in (c for c in all_crashy + all_clean if c["segment"].startswith(MODEL_KINDS)):
        assert (model_change["user_id"], model_change["version"]) not in expected
        assert model_change["model_version"] is not None

    assert redis_state(redis_server.url, "crashy:") == redis_state(redis_server.url, "clean:")
    assert len(redis_state(redis_server.url, "clean:")[0]) == 300

    dead_clean = kafka_broker.read_topic(clean.dlq_topic)
    dead_crashy = kafka_broker.read_topic(crashy.dlq_topic)
    assert {r.value for r in dead_crashy} == {r.value for r in dead_clean} == {b"{broken json"}
    assert len(dead_crashy) >= len(dead_clean) == 13
