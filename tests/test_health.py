"""What /healthz answers: ready while sources are polled and sinks write, 503 with the reasons otherwise."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import orjson
import pytest

from segstream.health import HEALTH, Health, supervised
from segstream.services import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_is_starting_until_its_first_poll_then_ok() -> None:
    """Before any source poll: not ready ('starting'); after one: ready."""
    clock = Clock()
    health = Health(stall_s=60.0, now=clock)
    assert health.report() == (False, {"status": "starting", "problems": [], "last_poll_age_s": None})
    health.beat()
    clock.now += 5
    assert health.report() == (True, {"status": "ok", "problems": [], "last_poll_age_s": 5.0})


def test_no_poll_for_health_stall_s_is_unhealthy() -> None:
    """A blocked worker thread polls nothing: past health_stall_s it is reported, with the age."""
    clock = Clock()
    health = Health(stall_s=60.0, now=clock)
    health.beat()
    clock.now += 60.0
    assert health.report()[0]
    clock.now += 0.5
    ready, body = health.report()
    assert not ready and body["status"] == "unhealthy"
    assert body["problems"] == ["no source polled for 60.5 s (health_stall_s 60): the worker is blocked"]
    clock.now = 999.0 + 200  # and a worker that never polled, once the stall time passed
    assert Health(stall_s=60.0, now=clock).report()[1]["status"] == "starting"


def test_a_failing_sink_is_unhealthy_until_it_writes(caplog: pytest.LogCaptureFixture) -> None:
    """A sink's failures count from the first one; one success clears them. The log says when
    failures start and end (a hung Redis used to stall the worker without a line)."""
    caplog.set_level(logging.INFO, logger="segstream.health")
    clock = Clock()
    health = Health(stall_s=60.0, now=clock)
    health.beat()
    health.sink_failing("redis", "TimeoutError: Timeout reading from socket")
    clock.now += 3
    health.beat()
    health.sink_failing("redis", "ConnectionError: refused")
    ready, body = health.report()
    assert not ready
    assert body["problems"] == ["sink redis failing for 3.0 s: ConnectionError: refused"]
    health.sink_ok("redis")
    assert health.report()[0]
    assert "sink redis failing: TimeoutError: Timeout reading from socket" in caplog.text
    assert "sink redis writes again after 3.0 s of failures" in caplog.text
    assert caplog.text.count("sink redis failing") == 1  # once, not at every retry


def test_a_dead_thread_is_reported_and_stops_the_worker() -> None:
    """supervised() reports a thread that raised, and asks for the fatal stop."""
    stops: list[str] = []

    def bug() -> None:
        raise RuntimeError("a bug")

    supervised("model follower", bug, stops.append)
    assert stops == ["the model follower thread died: RuntimeError: a bug"]
    assert "thread model follower died: RuntimeError: a bug" in HEALTH.report()[1]["problems"]
    HEALTH._dead.clear()  # the process-wide health other tests read
    supervised("fine", lambda: None, stops.append)  # a body that returns is no death
    assert len(stops) == 1


def test_healthz_answers_503_with_the_reasons() -> None:
    """The HTTP endpoint gives the status code Kubernetes probes read, and the JSON body."""
    from segstream.metrics import serve_metrics  # noqa: PLC0415

    port = free_port()
    server = serve_metrics(port, host="127.0.0.1")
    try:
        HEALTH.beat()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
            assert orjson.loads(answer.read())["status"] == "ok"
        HEALTH.sink_failing("kafka", "all brokers down")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert info.value.code == 503
        body = orjson.loads(info.value.read())
        assert body["status"] == "unhealthy" and "all brokers down" in body["problems"][0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b"segstream_ready 0.0" in answer.read()
    finally:
        HEALTH.sink_ok("kafka")
        server.shutdown()


def test_input_waiting_without_progress_is_unhealthy() -> None:
    """A worker that polls but consumes nothing while the broker holds more is reported; a quiet
    topic (nothing waiting) is not."""
    clock = Clock()
    health = Health(stall_s=10.0, now=clock)
    health.beat()
    health.progress()
    clock.now += 30
    health.beat()  # polled, nothing came, nothing waits: a quiet topic
    assert health.report()[0]
    health.input_waiting()
    ready, body = health.report()
    assert not ready
    assert body["problems"] == ["input is waiting but none was consumed for 30.0 s (health_stall_s 10)"]
    health.progress()
    assert health.report()[0]


def test_a_failure_no_longer_repeated_expires() -> None:
    """A failing sink repeats its reports; one that stopped reporting (and had nothing to write
    that would clear it) counts no more after FAILING_FRESH_S."""
    from segstream.health import FAILING_FRESH_S  # noqa: PLC0415

    clock = Clock()
    health = Health(stall_s=1e9, now=clock)
    health.beat()
    health.sink_failing("kafka", "all brokers down")
    clock.now += FAILING_FRESH_S
    assert not health.report()[0]
    clock.now += 1
    assert health.report()[0]


def test_the_kafka_sink_is_failing_only_while_it_can_deliver_nothing() -> None:
    """All brokers down marks the sink failing; one broker of several down does not."""
    from confluent_kafka import KafkaError  # noqa: PLC0415
    from segstream.flows.connectors import KafkaOutSink  # noqa: PLC0415

    from segstream.config import Config  # noqa: PLC0415

    sink = KafkaOutSink(Config())
    HEALTH.beat()
    sink._on_error(KafkaError(KafkaError._TRANSPORT))
    assert HEALTH.report()[0]
    sink._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not HEALTH.report()[0]
    sink._on_delivery(None, None)  # a delivery: the brokers are back
    sink._report_deliveries()  # as each batch and epoch close does
    assert HEALTH.report()[0]
