"""`segstream run` as a platform team runs it: metrics, health, SIGTERM, bad config."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisStore

from segstream.services import RedisServer, TansuBroker, clean_env, free_port
from segstream.tools.demo import scrape

from .helpers import make_config, run_processes, start_worker, wait_processed, worker_env

pytestmark = pytest.mark.integration


def event(user: str, name: str, i: int) -> bytes:
    return orjson.dumps({"type": "track", "event": name, "userId": user, "messageId": f"{user}{i}",
                         "timestamp": f"2024-05-01T10:00:{i:02d}Z"})


def test_metrics_health_and_sigterm(kafka_broker: TansuBroker, redis_server: RedisServer,
                                    topic_factory: Callable[..., str], redis_prefix: str,
                                    tmp_path: Path) -> None:
    """Scenario: a tailing worker takes events, is scraped, then gets SIGTERM.

    We expect counters that match the input, a JSON health answer, a clean exit
    with code 0, and everything it took written to Redis.
    """
    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq"))
    kafka_broker.produce(config.input_topics[0],
                         [(b"u1", event("u1", "Product Viewed", 1)), (b"u1", event("u1", "Order Completed", 2)),
                          (None, b"nope"), (b"u2", event("u2", "Page Viewed", 3))])
    port = free_port()
    worker = start_worker(worker_env(config, tmp_path / "rec", metrics_port=port), log=tmp_path / "w.log")
    try:
        wait_processed(port, 4, worker)
        deadline = time.monotonic() + 20
        while scrape(port).get("segstream_redis_profile_writes_total", 0) < 2:
            assert time.monotonic() < deadline, "profiles were not written"
            time.sleep(0.05)
        samples = scrape(port)
        assert samples["segstream_events_total"] == 3
        assert samples["segstream_dead_letters_total{reason=not_json}"] == 1
        assert samples["segstream_changes_total{kind=journey}"] == 4  # u1: 3, u2: 1
        assert 0 <= samples["segstream_consumer_lag_seconds"] < 600  # produced moments ago
        assert samples["segstream_event_time_lag_seconds"] > 0  # events are from 2024
        assert samples["segstream_sink_batch_seconds_count{sink=kafka}"] >= 1
        assert samples["segstream_sink_batch_seconds_count{sink=redis}"] >= 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            health = orjson.loads(resp.read())
        assert health["status"] == "ok" and health["last_batch_age_s"] is not None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "w.log").read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "stopped by signal" in (tmp_path / "w.log").read_text()
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.profile("u1")["journey"] == "decision"
    assert store.user_ids() == ["u1", "u2"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SEGSTREAM_BROKER": "x:1"}, "SEGSTREAM_BROKERS"),
        ({"SEGSTREAM_SESSION_GAP_S": "soon"}, "session_gap_s"),
        ({"SEGSTREAM_SEGMENTS_FILE": "/nonexistent/segments.toml"}, "segments_file"),
    ],
)
def test_bad_config_fails_at_start_naming_the_field(env: dict[str, str], expected: str) -> None:
    """A bad setting stops `segstream run` before it starts, with exit code 2 and the field named."""
    proc = subprocess.run([sys.executable, "-m", "segstream.cli", "run"], env=clean_env(env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lookup_prints_the_profile(redis_server: RedisServer, redis_prefix: str) -> None:
    """`segstream lookup USER` prints the stored profile as JSON; unknown users exit 1."""
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    store.apply([UserUpdate("u9", 2, 5, orjson.dumps(
        {"journey": "decision", "version": "2", "events_total": "5"}), ())])
    env = clean_env({"SEGSTREAM_REDIS_URL": redis_server.url, "SEGSTREAM_REDIS_PREFIX": redis_prefix})
    found = subprocess.run([sys.executable, "-m", "segstream.cli", "lookup", "u9"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert orjson.loads(found.stdout) == {"user_id": "u9", "journey": "decision", "version": "2",
                                          "events_total": "5"}
    missing = subprocess.run([sys.executable, "-m", "segstream.cli", "lookup", "nobody"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no profile" in missing.stdout


def test_two_processes_share_the_work_then_one_resumes_it(
        kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
        redis_prefix: str, tmp_path: Path) -> None:
    """Scenario: two `segstream run -i N -a ...` processes start together on a 2-partition topic.

    We expect both to set up one shared recovery directory without racing, to
    exit 0 at the end of the input, and together to produce exactly the
    changes and profiles of one process. Then one process resumes from their
    recovery directory (another process count: the sinks' partitions of the
    second process are in it) and carries on from their users' state.
    """
    config = make_config(kafka_broker, redis_server.url, redis_prefix,
                         topic_factory("in", partitions=2), topic_factory("out"), topic_factory("dlq"))
    users = [f"u{i}" for i in range(40)]
    names = ["Product Viewed", "Checkout Started", "Order Completed", "Order Completed"]
    sent = kafka_broker.produce(config.input_topics[0],
                                [(u.encode(), event(u, n, i)) for i, n in enumerate(names) for u in users])
    # The whole input is readable before the workers start: a worker that stops
    # at the end of its partitions must find all of it.
    assert len(kafka_broker.read_topic(config.input_topics[0])) == sent
    env = worker_env(config, tmp_path / "shared-recovery")
    codes, logs = run_processes(env, 2, tmp_path)
    assert codes == [0, 0], logs[-3000:]
    assert logs.count("initialised recovery directory") == 1
    changes = [orjson.loads(r.value) for r in kafka_broker.read_topic(config.output_topic)]
    versions: dict[str, list[int]] = {}
    for change in changes:
        versions.setdefault(change["user_id"], []).append(change["version"])
    assert sorted(versions) == sorted(users), logs[-3000:]
    base = 1714557600 * 1_000_000  # the users' first event time in microseconds
    for user, seen in versions.items():
        # Each version once, in the blocks one process gives (9 per event: two
        # journey slots, one per default rule): awareness, consideration, new_user,
        # needs_enrichment; decision; recent_purchaser; retention.
        assert sorted(seen) == [base + v for v in (1, 2, 8, 9, 9 + 2, 18 + 2 + 5, 27 + 2)], user
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.user_ids() == sorted(users)
    assert store.members("journey:retention") == set(users)

    more = [(u.encode(), event(u, "Product Viewed", 30)) for u in users[:10]]
    kafka_broker.produce(config.input_topics[0], more)
    codes, logs = run_processes(env, 1, tmp_path)
    assert codes == [0], logs[-3000:]
    # Their fifth event: counted on top of the state the two processes left.
    assert {store.profile(u)["events_total"] for u in users[:10]} == {"5"}
    assert {store.profile(u)["events_total"] for u in users[10:]} == {"4"}


BUGGY_FOLLOWER = """
import sys
from segstream.operators.models import ModelHub

def follow(self, predictor):
    raise RuntimeError("a bug in follow")

ModelHub.follow = follow
from segstream.cli import main
sys.exit(main(["run"]))
"""


def test_a_dead_background_thread_stops_the_worker_non_zero(
        kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
        redis_prefix: str, tmp_path: Path) -> None:
    """Scenario: the model follower thread dies of a bug (injected) while the worker tails.

    We expect the worker to stop with exit code 3 and the reason in its log, not run on
    half-alive; its output so far is written.
    """
    from segstream.operators.models import ModelConfig, Models  # noqa: PLC0415

    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq"))
    kafka_broker.create_topics([config.model_events_topic])
    kafka_broker.produce(config.input_topics[0], [(b"u1", event("u1", "Product Viewed", 1))])
    port = free_port()
    env = worker_env(config, tmp_path / "rec", metrics_port=port)
    log = tmp_path / "w.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-c", BUGGY_FOLLOWER], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    worker.log = log  # type: ignore[attr-defined]  # what assert_running reads
    try:
        wait_processed(port, 1, worker)  # type: ignore[arg-type]
        predictor = Models(ModelConfig()).predictor().to_json()
        kafka_broker.produce(config.model_events_topic, [(b"version", orjson.dumps(
            {"kind": "version", "model_version": 1, "detail": {"predictor": predictor}}))])
        assert worker.wait(60) == 3, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert "the model follower thread died: RuntimeError: a bug in follow" in text
    assert "a restart resumes from it" in text
    assert RedisStore.from_url(redis_server.url, redis_prefix).profile("u1")["events_total"] == "1"


@pytest.mark.parametrize("form", ["query", "userinfo"])
def test_a_redis_password_never_reaches_the_log(
        kafka_broker: TansuBroker, topic_factory: Callable[..., str], redis_prefix: str,
        tmp_path: Path, form: str) -> None:
    """Scenario: Redis requires a password, given as ?password= or as user:password@.

    We expect the worker to authenticate and write, and the password nowhere in its log
    (the ?password= form was logged in clear).
    """
    secret = "s3cret-" + redis_prefix.strip(":")
    server = RedisServer(password=secret)
    try:
        url = (f"redis://127.0.0.1:{server.port}/0?password={secret}" if form == "query"
               else f"redis://default:{secret}@127.0.0.1:{server.port}/0")
        config = make_config(kafka_broker, url, redis_prefix, topic_factory("in"),
                             topic_factory("out"), topic_factory("dlq"))
        kafka_broker.produce(config.input_topics[0], [(b"u1", event("u1", "Product Viewed", 1))])
        worker = start_worker(worker_env(config, tmp_path / "rec"), "--until-end",
                              log=tmp_path / "w.log")
        assert worker.wait(60) == 0, (tmp_path / "w.log").read_text()[-2000:]
        text = (tmp_path / "w.log").read_text()
        assert secret not in text
        assert "redis redis://" in text and "***" in text
        assert RedisStore.from_url(url, redis_prefix).profile("u1")["events_total"] == "1"
    finally:
        server.stop()
