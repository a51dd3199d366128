"""The plain consumer-loop baseline does the flow's work: same outputs as the Bytewax flow."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bytewax.testing import run_main
from segstream.flows.segmentation import build_flow
from segstream.state.redis import RedisStore

from benchmarks.baseline import run_baseline
from segstream.services import RedisServer, TansuBroker
from segstream.tools.generate import generate
from tests.integration.helpers import keyed, make_config

pytestmark = pytest.mark.integration

OWN_EVENT_FIELDS = ("events_total", "purchases_total", "revenue_total", "journey",
                    "sessions_total", "first_seen", "last_seen", "late_total")
"""Profile fields that depend on the user's own events only (not on models or wall time)."""


def test_baseline_matches_the_flow(kafka_broker: TansuBroker, redis_server: RedisServer,
                                   topic_factory: Callable[..., str], redis_prefix: str) -> None:
    """Scenario: 2,000 generated events of 200 users on two partitions, keyed by user.

    We expect the baseline to consume every message, to produce as many change
    messages as it counts, and to leave the same Redis profiles (own-event
    fields) and dead letters as the Bytewax flow run on the same input.
    """
    log = generate(200, 2000, seed=3)
    clicks = topic_factory("clicks", partitions=2)
    expected = kafka_broker.produce(clicks, keyed(log.lines))
    assert expected == 2000

    configs = []
    for name in ("base", "flow"):
        output, dlq = topic_factory(f"changes-{name}"), topic_factory(f"dlq-{name}")
        kafka_broker.create_topics([f"{output}-model-events"])
        configs.append(make_config(kafka_broker, redis_server.url, f"{redis_prefix}{name}:",
                                   clicks, output, dlq))
    base, flow = configs

    result = run_baseline(base, expected, timeout_s=60)
    run_main(build_flow(flow, tail=False))

    assert result.events == expected
    assert result.changes > 0
    assert len(kafka_broker.read_topic(base.output_topic)) == result.changes
    base_dlq = kafka_broker.read_topic(base.dlq_topic)
    assert len(base_dlq) == result.dead_letters > 0
    assert sorted(r.value or b"" for r in base_dlq) == sorted(
        r.value or b"" for r in kafka_broker.read_topic(flow.dlq_topic))

    base_store = RedisStore.from_url(base.redis_url, base.redis_prefix)
    flow_store = RedisStore.from_url(flow.redis_url, flow.redis_prefix)
    try:
        users = sorted(base_store.user_ids())
        assert users == sorted(flow_store.user_ids())
        assert len(users) == result.users > 100
        for user in users:
            mine, theirs = base_store.profile(user), flow_store.profile(user)
            assert {f: mine.get(f) for f in OWN_EVENT_FIELDS} == {
                f: theirs.get(f) for f in OWN_EVENT_FIELDS}, user
        assert sum(int(base_store.profile(u)["events_total"]) for u in users) == (
            expected - result.dead_letters)
    finally:
        base_store.close()
        flow_store.close()
