"""End to end through a real Kafka-protocol broker (Tansu) and a real redis-server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main

from segstream.config import Config
from segstream.flows.segmentation import build_flow
from segstream.services import RedisServer, TansuBroker
from segstream.state.redis import RedisStore

from .helpers import change_docs, make_config

pytestmark = pytest.mark.integration
T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)


DAY = 86400


def event(user: str, name: str, second: int, **extra: Any) -> bytes:
    context: dict[str, Any] = {"device": {"type": "mobile"}}
    if user == "alice":  # alice is known: email and country, so she needs no enrichment
        context |= {"location": {"country": "DE"}, "traits": {"email": "alice@example.com"},
                    "campaign": {"source": "newsletter"}}
    doc = {"type": "track", "event": name, "userId": user, "anonymousId": f"anon-{user}",
           "messageId": f"{user}-{second}", "timestamp": (T0 + timedelta(seconds=second)).isoformat().replace("+00:00", "Z"),
           "properties": extra, "context": context}
    return orjson.dumps(doc)


def microseconds(second: int) -> int:
    """A new user's versions start at its first event time in microseconds."""
    return int((T0 + timedelta(seconds=second)).timestamp()) * 1_000_000


PROFILE_FIELDS = {
    "journey", "segments", "version", "updated_at", "events_total", "late_total", "first_seen",
    "last_seen", "sessions_total", "session_events", "session_length_s", "events_per_session",
    "bounce_rate", "purchases_total", "revenue_total", "purchases_30d", "purchases_90d",
    "revenue_30d", "revenue_90d", "aov_90d", "last_purchase", "since_last_purchase_s",
    "engagement", "device", "country", "channel", "traits", "completeness",
    "cart_abandoned_total", "cart_abandoned", "since_last_seen_s", "age_s", "rfm", "cluster",
    "churn_p", "churn_band", "model_version",
    *(f"{role}_{h}" for role in ("product_view", "search", "add_to_cart", "checkout", "purchase",
                                 "sessions")
      for h in ("1h", "24h", "7d", "30d")),
}
"""The profile hash fields docs/features.md documents."""


@pytest.fixture
def pipeline(kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
             redis_prefix: str) -> Config:
    return make_config(kafka_broker, redis_server.url, redis_prefix, topic_factory("clicks", partitions=2),
                       topic_factory("changes"), topic_factory("dlq"))


def run_until_end(config: Config) -> None:
    run_main(build_flow(config, tail=False))


def test_scripted_journey(pipeline: Config, kafka_broker: TansuBroker, redis_server: RedisServer) -> None:
    """Scenario: one user browses, checks out and buys twice; another only looks.

    We expect the exact journey changes on the topic, in version order per user,
    and Redis profiles and member sets that say where each user is now.
    """
    alice = [event("alice", "Page Viewed", 0), event("alice", "Product Viewed", 30),
             event("alice", "Checkout Started", 60), event("alice", "Order Completed", 90, revenue=40.5),
             # 2 hours later: a new session, second purchase -> retention
             event("alice", "Order Completed", 7290, revenue=9.5),
             # 20 days of silence (churn_risk after 14), then she is back (win_back)
             # and checks out 30 minutes later, inside win_back's 1 h dwell: no move.
             event("alice", "Product Viewed", 7290 + 20 * DAY),
             event("alice", "Checkout Started", 7290 + 20 * DAY + 1800)]
    bob = [event("bob", "Page Viewed", 5), orjson.dumps({"type": "page", "name": "Home",
                                                          "anonymousId": "bob", "timestamp": "2024-05-01T10:01:00Z",
                                                          "messageId": "bob-page"})]
    kafka_broker.produce(pipeline.input_topics[0], [(b"alice", v) for v in alice] + [(b"bob", v) for v in bob])
    run_until_end(pipeline)

    changes = change_docs(kafka_broker.read_topic(pipeline.output_topic))
    by_user: dict[str, list[dict]] = {}
    for doc in changes:
        by_user.setdefault(doc["user_id"], []).append(doc)
    a, b = microseconds(0), microseconds(5)
    journey = [(d["segment"], d["previous"], d["version"] - a, d["event_time"], d["cause"], d["rule"])
               for d in by_user["alice"] if d["kind"] == "journey"]
    # Versions: each event takes a block of 9 (two journey slots, one per default
    # rule), each feature snapshot a block of 10 (cluster, churn, journey, rules):
    # events at 0, 30, 60, 90 and 7290 take 0-45, the session-end snapshot 45-55.
    assert journey == [
        ("journey:awareness", None, 2, "2024-05-01T10:00:00.000Z", "alice-0", "start"),
        ("journey:consideration", "journey:awareness", 9 + 2, "2024-05-01T10:00:30.000Z",
         "alice-30", "awareness->consideration"),
        ("journey:decision", "journey:consideration", 18 + 2, "2024-05-01T10:01:00.000Z",
         "alice-60", "awareness|consideration|win_back->decision"),
        ("journey:retention", "journey:decision", 36 + 2, "2024-05-01T12:01:30.000Z",
         "alice-7290", "decision|win_back->retention"),
        # 14 days after her last event, in event time; the timeline decides, so the
        # inactivity transition comes before her return even though no watermark
        # passed it first (her partition saw no other event in between).
        ("journey:churn_risk", "journey:retention", 45 + 10 + 1, "2024-05-15T12:01:30.000Z",
         "timer:journey", "inactive_14d"),
        ("journey:win_back", "journey:churn_risk", 45 + 10 + 2, "2024-05-21T12:01:30.000Z",
         "alice-1735290", "returned"),
        # The checkout 30 minutes later moves nothing: win_back's minimum dwell is 1 hour.
    ]
    assert all(d["change"] == "enter" and d["model_version"] is None and d["scores"] is None
               for d in by_user["alice"] if d["kind"] == "journey")
    rules = [(d["segment"], d["change"], d["version"] - a, d["cause"], d["rule"])
             for d in by_user["alice"] if d["kind"] == "rule"]
    assert rules == [
        ("new_user", "enter", 2 + 6, "alice-0", "new_user"),
        ("recent_purchaser", "enter", 27 + 2 + 5, "alice-90", "recent_purchaser"),
        ("recent_purchaser", "exit", 55 + 2 + 5, "alice-1735290", "recent_purchaser"),
        ("new_user", "exit", 55 + 2 + 6, "alice-1735290", "new_user"),
    ]
    # The first session ended 30 min after its last event: a feature snapshot (one
    # user is far from the clusterer's warm-up: unassigned). Snapshots are taken on
    # settled events, so it comes once the watermark passed it, after the retention
    # change that was published as soon as its event came.
    [cluster] = [d for d in by_user["alice"] if d["kind"] == "cluster"]
    assert (cluster["segment"], cluster["version"] - a, cluster["cause"], cluster["model_version"]) == (
        "cluster:unassigned", 45 + 1, "timer:session_end", 0)
    versions = [d["version"] for d in by_user["alice"]]
    assert versions == sorted(set(versions))
    common = {"change": "enter", "previous": None, "scores": None, "model_version": None}
    assert by_user["bob"] == [
        {"user_id": "bob", "kind": "journey", "segment": "journey:awareness", "version": b + 2,
         "event_time": "2024-05-01T10:00:05.000Z", "cause": "bob-5", "rule": "start", **common},
        {"user_id": "bob", "kind": "rule", "segment": "new_user", "version": b + 8,
         "event_time": "2024-05-01T10:00:05.000Z", "cause": "bob-5", "rule": "new_user", **common},
        {"user_id": "bob", "kind": "rule", "segment": "needs_enrichment", "version": b + 9,
         "event_time": "2024-05-01T10:00:05.000Z", "cause": "bob-5", "rule": "needs_enrichment",
         **common},
    ]

    store = RedisStore.from_url(redis_server.url, pipeline.redis_prefix)
    alice_profile = store.profile("alice")
    updated_at = alice_profile.pop("updated_at")
    assert updated_at.endswith("Z")
    assert set(alice_profile) | {"updated_at"} == PROFILE_FIELDS
    assert {k: alice_profile[k] for k in (
        "journey", "segments", "version", "events_total", "sessions_total", "purchases_total",
        "revenue_total", "first_seen", "last_seen", "session_events", "purchase_24h",
        "product_view_1h", "aov_90d", "device", "country", "channel", "traits", "completeness",
        "last_purchase", "since_last_purchase_s", "bounce_rate", "rfm")} == {
        # The version also counts the blocks the end of the input took when it
        # settled her last events: session 2's end snapshot (10) and the
        # inactivity timer on the settled profile (9), after the checkout's block.
        "journey": "win_back", "segments": "[]", "version": str(a + 73 + 10 + 9), "events_total": "7",
        "sessions_total": "3", "purchases_total": "2", "revenue_total": "50.0",
        "first_seen": "2024-05-01T10:00:00.000Z", "last_seen": "2024-05-21T12:31:30.000Z",
        "session_events": "2", "purchase_24h": "0", "product_view_1h": "1", "aov_90d": "25.0",
        "device": "mobile", "country": "DE", "channel": "newsletter",
        "traits": '{"email":"alice@example.com"}', "completeness": "1.0",
        "last_purchase": "2024-05-01T12:01:30.000Z", "since_last_purchase_s": "1729800.0",
        "bounce_rate": "0.3333333333333333",
        "rfm": "",  # one buyer: RFM needs min_population (100) buyers
    }
    assert {k: alice_profile[k] for k in ("cluster", "churn_p", "churn_band", "model_version")} == {
        "cluster": "unassigned", "churn_p": "", "churn_band": "", "model_version": "0"}
    assert store.profile("bob")["events_total"] == "2"
    assert store.profile("bob")["segments"] == '["needs_enrichment","new_user"]'
    # Emptied sets disappear in Redis, so only non-empty segments remain.
    assert store.segments() == {"journey:win_back": {"alice"}, "journey:awareness": {"bob"},
                                "needs_enrichment": {"bob"}, "new_user": {"bob"},
                                "cluster:unassigned": {"alice"}}
    assert kafka_broker.read_topic(pipeline.dlq_topic) == []


BAD = {
    "empty": b"",
    "oversized": b'{"pad":"' + b"x" * 40000 + b'"}',
    "not_json": b"{\"type\": \"track\",",
    "not_object": b"[1,2,3]",
    "bad_type": b'{"type":"shout","userId":"u","timestamp":"2024-05-01T10:00:00Z"}',
    "missing_event": b'{"type":"track","userId":"u","timestamp":"2024-05-01T10:00:00Z"}',
    "missing_id": b'{"type":"track","event":"x","timestamp":"2024-05-01T10:00:00Z"}',
    "missing_timestamp": b'{"type":"track","event":"x","userId":"u"}',
    "bad_timestamp": b'{"type":"track","event":"x","userId":"u","timestamp":"31/12/2024"}',
    "wrong_type": b'{"type":"track","event":"x","userId":"u","timestamp":"2024-05-01T10:00:00Z","properties":[]}',
    "bad_value": b'{"event":"Order Completed","userId":"u","timestamp":"2024-05-01T10:00:00Z",'
                 b'"properties":{"revenue":1e303}}',
    "future": b'{"event":"x","userId":"u","timestamp":"9999-12-31T23:59:59Z"}',
    "too_old": b'{"event":"x","userId":"u","timestamp":"1970-01-01T00:00:00Z"}',
}


def test_every_kind_of_bad_input_is_dead_lettered(pipeline: Config, kafka_broker: TansuBroker,
                                                  redis_server: RedisServer) -> None:
    """Scenario: one message of each kind of bad input, between good ones.

    We expect one dead letter per bad input, carrying the original bytes and key,
    its reason and source coordinates in headers; the good events still flow.
    """
    topic = pipeline.input_topics[0]
    produced = [(b"good", event("good", "Page Viewed", 0))]
    produced += [(reason.encode(), raw) for reason, raw in BAD.items()]
    produced += [(b"good", event("good", "Product Viewed", 1))]
    kafka_broker.produce(topic, produced)
    run_until_end(pipeline)

    dead = kafka_broker.read_topic(pipeline.dlq_topic)
    by_reason = {dict(r.headers)["segstream.reason"].decode(): r for r in dead}
    assert set(by_reason) == set(BAD)
    assert len(dead) == len(BAD)
    for reason, record in by_reason.items():
        assert record.value == BAD[reason]
        assert record.key == reason.encode()
        headers = dict(record.headers)
        assert headers["segstream.detail"]
        src_topic, partition, offset = headers["segstream.source"].decode().rsplit("/", 2)
        assert src_topic == topic and int(partition) in (0, 1) and int(offset) >= 0
    store = RedisStore.from_url(redis_server.url, pipeline.redis_prefix)
    assert store.user_ids() == ["good"]
    assert store.profile("good")["journey"] == "consideration"


def test_a_one_megabyte_message_is_dead_lettered_cut_to_fit(
        pipeline: Config, kafka_broker: TansuBroker, redis_server: RedisServer) -> None:
    """Scenario: a producer sends a message of about 1 MB (Apache Kafka's default admits it).

    We expect it dead-lettered as oversized with its first dead_letter_max_bytes and a header
    giving its size (producing it whole failed with MSG_SIZE_TOO_LARGE and stopped the worker),
    and the events after it processed.
    """
    topic = pipeline.input_topics[0]
    huge = b'{"pad":"' + b"x" * 1_040_000 + b'"}'  # under Kafka's broker default 1048588
    kafka_broker.produce(topic, [(b"good", event("good", "Page Viewed", 0)), (b"big", huge),
                                 (b"good", event("good", "Product Viewed", 1))],
                         settings={"message.max.bytes": "1100000"})
    run_until_end(pipeline)
    [dead] = kafka_broker.read_topic(pipeline.dlq_topic)
    headers = dict(dead.headers)
    assert headers["segstream.reason"] == b"oversized"
    assert headers["segstream.value_bytes"] == str(len(huge)).encode()
    assert dead.value == huge[:pipeline.dead_letter_max_bytes - len(b"big")]
    assert dead.key == b"big"
    store = RedisStore.from_url(redis_server.url, pipeline.redis_prefix)
    assert store.profile("good")["events_total"] == "2"
