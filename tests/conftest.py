"""Shared fixtures: a real Tansu broker and a real redis-server per test session.

Integration tests never mock Kafka or Redis. Each test makes its own uuid-named
topics (``topic_factory``) and Redis key prefix (``redis_prefix``), so tests
share the two servers without seeing each other's data.

A service that cannot start skips its tests on a developer's machine, and
fails them under ``CI=true``: CI must never pass by skipping what it is there
to run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from segstream.errors import ServiceError
from segstream.services import RedisServer, TansuBroker


def unavailable(what: str, exc: Exception, env: dict[str, str] | None = None) -> None:
    """Skip (a developer's machine) or fail (``CI=true``) a test whose service did not start."""
    message = f"{what}: {exc}"
    if (os.environ if env is None else env).get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a service that cannot start fails the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A Tansu Kafka-protocol broker on a free loopback port."""
    try:
        broker = TansuBroker()
    except ServiceError as exc:
        unavailable("no local Kafka-protocol broker", exc)
    with broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A memory-only redis-server on a free loopback port."""
    try:
        server = RedisServer()
    except ServiceError as exc:
        unavailable("no redis-server", exc)
    with server:
        yield server


@pytest.fixture
def topic_factory(kafka_broker: TansuBroker) -> Callable[..., str]:
    """Create a uniquely named topic: ``topic_factory("in", partitions=2) -> "in-<uuid>"``."""

    def make(prefix: str = "t", *, partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka_broker.create_topics([name], partitions=partitions)
        return name

    return make


@pytest.fixture
def redis_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}:"
