"""The online models through the real broker and redis-server: outputs, and kill and resume."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from segstream.services import RedisServer, TansuBroker, free_port
from segstream.state.redis import RedisStore
from segstream.tools.generate import generate

from .helpers import (
    change_docs,
    keyed,
    make_config,
    run_processes,
    start_worker,
    wait_processed,
    worker_env,
)

pytestmark = pytest.mark.integration

RESUMED = re.compile(r"models resumed at version (\d+) after (\d+) learned items")


def test_models_resume_from_their_snapshot_and_publish(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str, tmp_path: Path,
) -> None:
    """Scenario: a generated log; the worker is SIGKILLed once the models are warm, then resumed.

    We expect the resumed worker to continue from the models in its recovery
    snapshot (not from scratch), users to end in clusters described in Redis,
    each in exactly the cluster set its profile names, churn bands published,
    and model versions on the model-events topic.
    """
    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq"))
    log = generate(400, 24_000, seed=5, malformed_rate=0.0)
    records = keyed(log.lines)
    first, second = records[:12_000], records[12_000:]
    kafka_broker.produce(config.input_topics[0], first)
    port = free_port()
    env = worker_env(config, tmp_path / "recovery", metrics_port=port, snapshot_interval_s=0.3) | {
        "SEGSTREAM_CLUSTER_WARMUP": "300", "SEGSTREAM_CHURN_WARMUP": "50",
    }
    worker = start_worker(env, log=tmp_path / "worker.log")
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    try:
        wait_processed(port, len(first), worker)
        deadline = time.monotonic() + 30
        while not store.model_info() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a few snapshots land with the warm models
        version_at_kill = int(store.model_info()["model_version"])
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert version_at_kill >= 1

    kafka_broker.produce(config.input_topics[0], second)
    resumed = start_worker(env, "--until-end", log=tmp_path / "worker.log")
    assert resumed.wait(120) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    found = RESUMED.search((tmp_path / "worker.log").read_text())
    assert found, "the resumed worker did not load models from its snapshot"
    assert int(found.group(1)) >= 1 and int(found.group(2)) > 300  # warm, not from scratch

    summary = orjson.loads(store.model_info()["summary"])
    assert summary["cluster_warm"] and summary["churn_warm"]
    assert int(store.model_info()["model_version"]) >= version_at_kill
    assert summary["learned"] > int(found.group(2))  # it went on learning after the resume

    segments = store.segments()
    clusters: dict[str, int] = {}
    for user in store.user_ids():
        profile = store.profile(user)
        holding = {s for s, members in segments.items() if s.startswith("cluster:") and user in members}
        assert holding == ({f"cluster:{profile['cluster']}"} if profile["cluster"] else set())
        clusters[profile["cluster"]] = clusters.get(profile["cluster"], 0) + 1
    assigned = {c: n for c, n in clusters.items() if c not in ("", "unassigned")}
    assert sum(assigned.values()) > len(log.truth) // 2, clusters
    for cluster_id in assigned:
        assert store.cluster_info(cluster_id)["description"], cluster_id

    changes = change_docs(kafka_broker.read_topic(config.output_topic))
    churn = [c for c in changes if c["kind"] == "churn"]
    assert churn and all(c["scores"]["churn_p"] is not None and c["model_version"] >= 1 for c in churn)
    events = [orjson.loads(r.value) for r in kafka_broker.read_topic(config.model_events_topic)]
    versions = [e["model_version"] for e in events if e["kind"] == "version"]
    assert versions and max(versions) == int(store.model_info()["model_version"])
    newest = max((e for e in events if e["kind"] == "version"), key=lambda e: e["model_version"])
    assert set(assigned) <= set(newest["detail"]["clusters"])  # every id in use is described
    store.close()


def test_two_processes_predict_with_one_set_of_models(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str, tmp_path: Path,
) -> None:
    """Scenario: two processes on a 2-partition topic; one of them holds the learner.

    We expect the users of both processes to be clustered: the process without
    the learner follows the model versions on the model-events topic. (Without
    that, about half the users would stay ``cluster:unassigned``.)
    """
    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in", partitions=2),
                         topic_factory("out"), topic_factory("dlq"))
    log = generate(400, 24_000, seed=6, malformed_rate=0.0)
    kafka_broker.produce(config.input_topics[0], keyed(log.lines))
    env = worker_env(config, tmp_path / "recovery") | {
        "SEGSTREAM_CLUSTER_WARMUP": "300", "SEGSTREAM_CHURN_WARMUP": "50",
    }
    codes, logs = run_processes(env, 2, tmp_path)
    assert codes == [0, 0], logs[-3000:]

    store = RedisStore.from_url(redis_server.url, redis_prefix)
    clusters = [store.profile(user)["cluster"] for user in store.user_ids()]
    unassigned = sum(c in ("", "unassigned") for c in clusters)
    assert unassigned <= 0.1 * len(clusters), (unassigned, len(clusters))
    store.close()
