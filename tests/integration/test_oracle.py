"""The oracle: every user's features from the real flow equal a batch recomputation over the sorted log.

The stream side is the whole product: a generated log shuffled within the
allowed lateness, produced to a real broker, run by `build_flow` to the end of
the topic, read back from a real redis-server. The batch side is
`tests/oracle/batch_features.py`, written separately from the streaming code
from the spec in docs/features.md, over the same events sorted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson
import pytest
from bytewax.testing import run_main

from segstream.config import load_segments
from segstream.flows.segmentation import build_flow
from segstream.operators.events import Event, iso_utc
from segstream.operators.parse import EventParser
from segstream.services import RedisServer, TansuBroker
from segstream.state.redis import RedisStore
from segstream.tools.generate import generate
from tests.integration.helpers import make_config
from tests.oracle.batch_features import ORACLE_SEGMENTS, recompute

pytestmark = pytest.mark.integration

LATENESS = 120.0
USERS, EVENTS = 5000, 105_000
_ISO = {"first_seen", "last_seen", "last_purchase"}


def as_redis(name: str, value: object) -> object:
    """An oracle value in the form the Redis profile should hold it."""
    if value is None:
        return ""
    if name in _ISO:
        return iso_utc(value)  # type: ignore[arg-type]
    return value


def same(name: str, expected: object, stored: str) -> bool:
    expected = as_redis(name, expected)
    if name == "traits":
        return orjson.loads(stored) == expected
    if isinstance(expected, bool):
        return stored == ("true" if expected else "false")
    if isinstance(expected, str):
        return stored == expected
    if isinstance(expected, int):
        return stored == str(expected)
    if isinstance(expected, float):
        return math.isclose(float(stored), expected, rel_tol=1e-9, abs_tol=1e-9)
    raise AssertionError(f"{name}: unexpected oracle value {expected!r}")


def test_stream_equals_batch_oracle_on_a_shuffled_log(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str,
) -> None:
    """Scenario: 105k events of 5k users, shuffled within the 120 s allowed lateness.

    We expect, for every user, every feature in Redis to equal the batch
    recomputation over the sorted log (floats to 1e-9), the same journey phase
    and rule segments, and no event judged late.
    """
    log = generate(users=USERS, events=EVENTS, seed=7, arrival_jitter_s=LATENESS)
    parser = EventParser()
    valid = [line for line in log.lines if isinstance(parser.parse(line), Event)]
    times = [parser.parse(line).timestamp for line in valid]  # type: ignore[union-attr]
    out_of_order = sum(1 for a, b in zip(times, times[1:], strict=False) if b < a)
    assert out_of_order > len(valid) // 20  # the shuffle really reorders

    config = make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("in"),
                         topic_factory("out"), topic_factory("dlq")).replace(
        allowed_lateness_s=LATENESS)
    kafka_broker.produce(config.input_topics[0], [(None, line) for line in log.lines])
    run_main(build_flow(config, segments=load_segments(ORACLE_SEGMENTS), tail=False))

    dead = kafka_broker.read_topic(config.dlq_topic)
    assert len(dead) == len(log.lines) - len(valid)  # the malformed lines, nothing late
    expected = recompute((orjson.loads(line) for line in valid),
                         final_watermarks=max(times) - LATENESS)
    assert len(expected) >= USERS * 0.95
    store = RedisStore.from_url(redis_server.url, redis_prefix)
    assert store.user_ids() == sorted(expected)
    mismatches = []
    for user, features in expected.items():
        profile = store.profile(user)
        for name, value in features.items():
            if name == "segments":
                ok = orjson.loads(profile["segments"]) == value
            else:
                ok = same(name, value, profile[name])
            if not ok:
                mismatches.append((user, name, value, profile.get(name)))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    store.close()
