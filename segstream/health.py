"""Whether a worker is doing its job: what ``/healthz`` answers, and how a dying thread stops it.

A worker is *ready* when

- its dataflow is moving: a source polled within ``health_stall_s``. A tailing
  worker polls its source and its timer clock several times a second even
  when no input comes, so a silent poll means the worker thread is blocked (a
  hung sink, broker or Redis call), not a quiet topic;
- it makes progress while input waits: when the broker's last answer said a
  partition holds messages past the worker's position, some message was
  consumed within ``health_stall_s`` (a quiet topic waits for nothing);
- no sink is failing: a sink that is retrying a write (Redis refused or hung,
  Kafka undelivered) reports itself failing until a write succeeds;
- no background thread has died (the model follower, the population sync):
  those retry their transient errors, and one that still dies stops the
  worker non-zero (:func:`request_fatal_stop`) rather than leave it running
  half-alive.

``/healthz`` answers 200 with ``"status": "ok"`` when ready and 503 with the
reasons otherwise (``docs/reliability.md`` has the Kubernetes probes).

>>> health = Health(stall_s=60.0, now=lambda: 100.0)
>>> health.report()[0], health.report()[1]["status"]
(False, 'starting')
>>> health.beat(); health.report()[0]
True
>>> health.sink_failing("redis", "Timeout reading from socket"); health.report()[1]["problems"]
['sink redis failing for 0.0 s: Timeout reading from socket']
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STALL_S = 60.0
"""Default ``health_stall_s``: how long a worker may go without polling its sources."""
FAILING_FRESH_S = 30.0
"""A sink's failure counts until the sink writes, or until it has gone this long without
another failure report (a failing sink repeats its reports: Redis at each retry, librdkafka
at each reconnection; an idle sink may have nothing to write that would clear it)."""


class Health:
    """The health of one worker process (thread-safe; one per process, :data:`HEALTH`)."""

    def __init__(self, stall_s: float = DEFAULT_STALL_S, now: Callable[[], float] = time.monotonic
                 ) -> None:
        self.stall_s = stall_s
        self._now = now
        self._started = now()
        self._beat: float | None = None
        self._progress: float | None = None
        self._waiting = False
        self._failing: dict[str, tuple[float, float, str]] = {}  # sink: (since, last, problem)
        self._dead: dict[str, str] = {}
        self._lock = threading.Lock()

    def beat(self) -> None:
        """Record that a source was polled (the dataflow moves)."""
        self._beat = self._now()

    def progress(self) -> None:
        """Record that input was consumed."""
        self._progress = self._now()
        self._waiting = False

    def input_waiting(self) -> None:
        """Record that a poll found nothing although the broker holds input past the position."""
        self._waiting = True

    def sink_failing(self, sink: str, problem: str) -> None:
        """Record that ``sink`` failed a write and is retrying it (the first failure's time stays)."""
        with self._lock:
            now = self._now()
            started = sink not in self._failing
            since = self._failing.get(sink, (now, now, ""))[0]
            self._failing[sink] = (since, now, problem)
        if started:
            log.warning("sink %s failing: %s (retrying; /healthz answers 503 meanwhile)", sink,
                        problem)

    def sink_ok(self, sink: str) -> None:
        """Record that ``sink`` wrote successfully."""
        if sink in self._failing:
            with self._lock:
                found = self._failing.pop(sink, None)
            if found is not None:
                log.info("sink %s writes again after %.1f s of failures", sink,
                         self._now() - found[0])

    def thread_died(self, name: str, problem: str) -> None:
        """Record that background thread ``name`` died."""
        with self._lock:
            self._dead[name] = problem

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Return ``(ready, body)``: the JSON ``/healthz`` answers."""
        now = self._now()
        problems = []
        with self._lock:
            failing = dict(self._failing)
            dead = dict(self._dead)
        beat = self._beat
        silent = now - (self._started if beat is None else beat)
        if silent > self.stall_s:
            problems.append(f"no source polled for {silent:.1f} s (health_stall_s "
                            f"{self.stall_s:g}): the worker is blocked")
        idle = now - (self._started if self._progress is None else self._progress)
        if self._waiting and idle > self.stall_s:
            problems.append(f"input is waiting but none was consumed for {idle:.1f} s "
                            f"(health_stall_s {self.stall_s:g})")
        problems += [f"sink {sink} failing for {now - since:.1f} s: {problem}"
                     for sink, (since, last, problem) in sorted(failing.items())
                     if now - last <= FAILING_FRESH_S]
        problems += [f"thread {name} died: {problem}" for name, problem in sorted(dead.items())]
        if problems:
            status = "unhealthy"
        elif beat is None:
            status = "starting"
        else:
            status = "ok"
        body: dict[str, Any] = {"status": status, "problems": problems,
                                "last_poll_age_s": None if beat is None else round(now - beat, 3)}
        return status == "ok", body


HEALTH = Health()
"""The process's health, which the sources, sinks and threads report to."""

_fatal: list[str] = []


def request_fatal_stop(reason: str) -> None:
    """Stop the worker because part of it died.

    It exits non-zero (``segstream run`` checks :func:`fatal_reason`), and the
    restart resumes from the last snapshot.

    Called from a background thread: the main thread is inside the dataflow, so
    the stop goes through the same signal path as SIGTERM.
    """
    log.critical("stopping the worker: %s", reason)
    _fatal.append(reason)
    os.kill(os.getpid(), signal.SIGTERM)


def supervised(name: str, body: Callable[[], None], on_fatal: Callable[[str], None]) -> None:
    """Run a background thread's ``body``; if it raises, report it dead and call ``on_fatal``.

    The bodies retry their own transient errors: what reaches here is a bug or
    a lasting failure, and a worker without the thread would run half-alive.
    """
    try:
        body()
    except Exception as exc:
        log.exception("%s thread died", name)
        problem = f"{type(exc).__name__}: {exc}"
        HEALTH.thread_died(name, problem)
        on_fatal(f"the {name} thread died: {problem}")


def fatal_reason() -> str | None:
    """Return why :func:`request_fatal_stop` stopped the worker (``None``: it did not)."""
    return _fatal[0] if _fatal else None
