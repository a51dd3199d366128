"""The worker's background threads: they ride out broker and Redis outages, and a bug stops the worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import orjson
import pytest
import redis
from segstream.flows.models import ModelFollower
from segstream.flows.population import PopulationSync
from segstream.operators.models import ModelConfig, ModelHub, Models, Predictor
from segstream.operators.population import Population
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.services import RedisServer, TansuBroker, free_port


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class BuggyHub(ModelHub):
    def follow(self, predictor: Predictor) -> bool:
        raise RuntimeError("a bug in follow")


def test_the_model_follower_retries_an_unreachable_broker() -> None:
    """Scenario: the broker is unreachable (metadata requests time out). We expect the follower
    to keep retrying, alive, without asking to stop the worker (one timeout used to kill it)."""
    config = Config(brokers=(f"127.0.0.1:{free_port()}",), model_events_topic="models")
    stops: list[str] = []
    follower = ModelFollower(config, ModelHub(ModelConfig()), on_fatal=stops.append).start()
    try:
        time.sleep(4.5)  # a list_topics timeout is 2 s: at least one failed
        assert follower._thread.is_alive() and stops == []
    finally:
        follower.stop()
    assert not follower._thread.is_alive()


@pytest.mark.integration
def test_a_bug_in_the_model_follower_stops_the_worker(
        kafka_broker: TansuBroker, topic_factory: Callable[..., str]) -> None:
    """A failure that is no broker error kills the thread, which asks for the fatal stop."""
    topic = topic_factory("models")
    predictor = Models(ModelConfig()).predictor().to_json()
    kafka_broker.produce(topic, [(b"version", orjson.dumps(
        {"kind": "version", "model_version": 1, "detail": {"predictor": predictor}}))])
    config = Config(brokers=(kafka_broker.bootstrap,), model_events_topic=topic)
    stops: list[str] = []
    follower = ModelFollower(config, BuggyHub(ModelConfig()), on_fatal=stops.append).start()
    try:
        wait_for(lambda: bool(stops))
        assert stops == ["the model follower thread died: RuntimeError: a bug in follow"]
    finally:
        follower.stop()
        from segstream.health import HEALTH  # noqa: PLC0415

        HEALTH._dead.clear()


@pytest.mark.integration
def test_the_population_sync_rides_out_a_redis_restart() -> None:
    """Scenario: redis-server goes away for a few intervals and comes back on its port. We expect
    the sync thread alive throughout and exchanging again afterwards."""
    server = RedisServer()
    config = Config(redis_url=server.url, redis_prefix="pop:", population_sync_s=0.2,
                    redis_timeout_s=0.5)
    population = Population(("x",))
    population.replace(None, (5.0,))
    stops: list[str] = []
    sync = PopulationSync(config, population, "0", on_fatal=stops.append).start()
    try:
        reader = redis.Redis.from_url(server.url)
        wait_for(lambda: reader.exists("pop:population") == 1)
        server.stop()
        time.sleep(1.5)
        assert sync._thread.is_alive() and stops == []
        server = RedisServer(port=server.port)  # memory-only: empty again
        reader = redis.Redis.from_url(server.url)
        wait_for(lambda: reader.exists("pop:population") == 1)
        assert stops == []
    finally:
        sync.stop()
        server.stop()


@pytest.mark.integration
def test_a_bug_in_the_population_sync_stops_the_worker(redis_server: RedisServer,
                                                         redis_prefix: str) -> None:
    """A failure that is no Redis error kills the thread, which asks for the fatal stop."""
    class Broken(Population):
        def partial(self) -> dict:
            raise ValueError("a bug in partial")

    config = Config(redis_url=redis_server.url, redis_prefix=redis_prefix, population_sync_s=0.1)
    stops: list[str] = []
    sync = PopulationSync(config, Broken(("x",)), "0", on_fatal=stops.append).start()
    try:
        wait_for(lambda: bool(stops))
        assert stops == ["the population sync thread died: ValueError: a bug in partial"]
    finally:
        sync.stop()
        from segstream.health import HEALTH  # noqa: PLC0415

        HEALTH._dead.clear()


@pytest.mark.integration
def test_a_paused_redis_times_out_like_a_refused_one() -> None:
    """Scenario: redis-server is paused (SIGSTOP), so connections open but nothing answers.
    We expect a write to give up after the retry deadline with a timeout, not to hang."""
    server = RedisServer()
    failures: list[str | None] = []
    store = RedisStore.from_url(server.url, "hang:", retry_s=2.0, timeout_s=0.3,
                                on_failure=failures.append)
    try:
        store.apply([])  # nothing to send: no round trip
        store.members("x")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            store.members("x")
        waited = time.monotonic() - started
        assert 2.0 <= waited < 6.0, waited
        assert failures and all(f is not None and "Timeout" in f for f in failures)
        os.kill(server.proc.pid, signal.SIGCONT)
        assert store.members("x") == set()
        failures.clear()
        resumed = threading.Event()
        os.kill(server.proc.pid, signal.SIGSTOP)
        threading.Timer(0.8, lambda: (os.kill(server.proc.pid, signal.SIGCONT), resumed.set())).start()
        # A pause shorter than the deadline is ridden out; the written batch reports recovery.
        written = store.apply([UserUpdate("u1", 1, 1, orjson.dumps({"version": "1"}), ())])
        assert written == 1 and resumed.is_set()
        assert failures[0] is not None and failures[-1] is None
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        store.close()
        server.stop()
