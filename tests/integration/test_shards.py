"""Shards through the real broker and redis-server: independent processes, one set of models."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from segstream.operators.models import LearnItem
from segstream.state.redis import RedisStore

from segstream.services import RedisServer, TansuBroker, clean_env, free_ports
from segstream.tools.demo import processed, scrape
from segstream.tools.generate import generate
from tests.oracle.batch_features import ORACLE_SEGMENTS

from .helpers import change_docs, keyed, make_config, start_worker, wait_processed, worker_env
from .test_recovery import MODEL_KINDS, redis_state

pytestmark = pytest.mark.integration


def test_two_shards_give_one_process_s_results_with_one_set_of_models(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Scenario: two tailing shards on a 2-partition topic, each with its own recovery directory.

    We expect their journey and rule changes and Redis profiles together to be
    exactly those of one process on the same log (a user's events all reach
    one shard), shard 0 to learn the snapshots shard 1 sends on the learn
    topic, and shard 1's users to be clustered with the versions shard 0
    publishes.
    """
    input_topic = topic_factory("in", partitions=2)
    sharded = make_config(kafka_broker, redis_server.url, "sharded:", input_topic,
                          topic_factory("out-sharded"), topic_factory("dlq-sharded"))
    alone = make_config(kafka_broker, redis_server.url, "alone:", input_topic,
                        topic_factory("out-alone"), topic_factory("dlq-alone"))
    learn_topic = topic_factory("learn")
    log = generate(400, 24_000, seed=7, malformed_rate=0.0)
    sent = kafka_broker.produce(input_topic, keyed(log.lines))
    models = {"SEGSTREAM_CLUSTER_WARMUP": "300", "SEGSTREAM_CHURN_WARMUP": "50",
              "SEGSTREAM_SEGMENTS_FILE": str(ORACLE_SEGMENTS)}  # rules on the user's own events
    metrics_port = free_ports(2, consecutive=True)[0]
    shards = [start_worker(worker_env(sharded, tmp_path / f"recovery-{i}", metrics_port=metrics_port) | models
                           | {"SEGSTREAM_SHARDS": "2", "SEGSTREAM_SHARD": str(i),
                              "SEGSTREAM_MODEL_LEARN_TOPIC": learn_topic},
                           log=tmp_path / f"shard-{i}.log") for i in range(2)]
    try:
        wait_processed(metrics_port, sent, *shards, timeout=90)
        counts = [processed(scrape(metrics_port + i)) for i in range(2)]
        assert sum(counts) == sent and min(counts) > sent / 4, counts  # both shards did their part
        learned_here = scrape(metrics_port + 1).get("segstream_model_snapshots_total", 0)
        assert learned_here == 0, "shard 1 holds no learner"
        items = [LearnItem.from_json(r.value) for r in kafka_broker.read_topic(learn_topic)]
        from_shard_1 = sum(item.cluster_x is not None for item in items)  # the rest: churn labels
        assert from_shard_1 > 300 and len(items) > from_shard_1
        # Counted as they are handed to the producer, so never fewer than the topic holds.
        counted = scrape(metrics_port + 1).get("segstream_model_learn_items_sent_total{kind=snapshot}")
        assert counted is not None and counted >= from_shard_1
        # Shard 0 learns shard 1's snapshots and its own (about as many).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            learned = scrape(metrics_port).get("segstream_model_snapshots_total", 0)
            if learned >= from_shard_1 + 300:
                break
            time.sleep(0.1)
        assert learned >= from_shard_1 + 300
        time.sleep(1.5)  # the last epochs' writes
    finally:
        for shard in shards:
            shard.terminate()
        codes = [shard.wait(30) for shard in shards]
    assert codes == [0, 0], (tmp_path / "shard-0.log").read_text()[-3000:]
    assert "shard 1 of 2 reads 1-" in (tmp_path / "shard-1.log").read_text()

    one = start_worker(worker_env(alone, tmp_path / "recovery-alone") | models, "--until-end",
                       log=tmp_path / "alone.log")
    assert one.wait(120) == 0, (tmp_path / "alone.log").read_text()[-3000:]
    own = [change_docs(kafka_broker.read_topic(c.output_topic)) for c in (sharded, alone)]
    own = [sorted((c for c in changes if not c["segment"].startswith(MODEL_KINDS)),
                  key=lambda c: (c["user_id"], c["version"])) for changes in own]
    assert own[0] == own[1] and len(own[0]) > 400
    assert redis_state(redis_server.url, "sharded:") == redis_state(redis_server.url, "alone:")

    store = RedisStore.from_url(redis_server.url, "sharded:")
    clusters = [store.profile(user)["cluster"] for user in store.user_ids()]
    unassigned = sum(c in ("", "unassigned") for c in clusters)
    assert unassigned <= 0.1 * len(clusters), (unassigned, len(clusters))
    store.close()


def test_a_shard_refuses_a_bytewax_cluster_and_another_shard_s_state(tmp_path: Path) -> None:
    """A shard is a process on its own, and its recovery directory is its shard's alone."""
    run = [sys.executable, "-m", "segstream.cli", "run"]
    env = clean_env({"SEGSTREAM_SHARDS": "2", "SEGSTREAM_SHARD": "1", "SEGSTREAM_METRICS_PORT": "0",
                     "SEGSTREAM_RECOVERY_DIR": str(tmp_path / "r")})
    proc = subprocess.run([*run, "-i", "0", "-a", "127.0.0.1:1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "'--addresses'" in proc.stderr and "Traceback" not in proc.stderr


def test_topics_that_cannot_be_sharded_fail_at_start_naming_the_setting(
        kafka_broker: TansuBroker, topic_factory: Callable[..., str], tmp_path: Path) -> None:
    """Input topics of different partition counts would split users between shards: exit 2."""
    topics = f"{topic_factory('a', partitions=2)},{topic_factory('b', partitions=3)}"
    env = clean_env({"SEGSTREAM_SHARDS": "2", "SEGSTREAM_SHARD": "0", "SEGSTREAM_METRICS_PORT": "0",
                     "SEGSTREAM_BROKERS": kafka_broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": topics,
                     "SEGSTREAM_RECOVERY_DIR": str(tmp_path / "r")})
    proc = subprocess.run([sys.executable, "-m", "segstream.cli", "run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'shards'" in proc.stderr and "same partition count" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was set up
