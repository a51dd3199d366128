"""The dataflow, run by Bytewax on testing sources and sinks: wiring, dead letters, resume."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from segstream.flows.connectors import OutMessage
from segstream.flows.segmentation import Sinks, build_flow, user_config
from segstream.operators.user import POPULATION_FIELDS, UserUpdate

from segstream.config import Config, SegmentsConfig, load_segments
from tests.oracle.batch_features import ORACLE_SEGMENTS

CONFIG = Config()
ORACLE = load_segments(ORACLE_SEGMENTS)
ORACLE_USERS = user_config(CONFIG, ORACLE)


def track(user: str, name: str, second: int, **props: object) -> bytes:
    return orjson.dumps({"type": "track", "event": name, "userId": user, "messageId": f"{user}-{second}",
                         "timestamp": f"2024-05-01T10:00:{second:02d}Z", "properties": props})


def messages(values: list[bytes | None], topic: str = "clickstream") -> list[KafkaSourceMessage]:
    return [KafkaSourceMessage(key=None, value=v, topic=topic, partition=0, offset=i)
            for i, v in enumerate(values)]


def run_flow(items: list[object], *, workers: int = 1, recovery: RecoveryConfig | None = None,
             epoch: timedelta = timedelta(seconds=10),
             config: Config = CONFIG, segments: SegmentsConfig | None = None,
             ) -> tuple[list[OutMessage], list[UserUpdate]]:
    kafka_out: list[OutMessage] = []
    redis_out: list[UserUpdate] = []
    flow = build_flow(config, source=TestingSource(items), segments=segments,
                      sinks=Sinks(kafka=TestingSink(kafka_out), redis=TestingSink(redis_out)))
    if workers == 1:
        run_main(flow, epoch_interval=epoch, recovery_config=recovery)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers, epoch_interval=epoch,
                     recovery_config=recovery)
    return kafka_out, redis_out


def changes_of(out: list[OutMessage]) -> list[dict]:
    docs = [orjson.loads(m.value) for m in out if m.topic == CONFIG.output_topic]
    for doc in docs:
        doc.pop("emitted_at")
    return docs


FIRST_VERSION = 1714557601 * 1_000_000  # 2024-05-01T10:00:01Z
JOURNEY = [
    track("u1", "Product Viewed", 1),
    track("u1", "Checkout Started", 2),
    track("u1", "Order Completed", 3, revenue=10),
    track("u1", "Order Completed", 4, revenue=15),
]


@pytest.mark.parametrize("workers", [1, 2])
def test_scripted_journey(workers: int) -> None:
    """A user's journey comes out as exact change messages and a final profile update."""
    out, updates = run_flow(messages(JOURNEY), workers=workers)
    base = FIRST_VERSION  # a new user's versions start at its first event time in microseconds
    # Each event takes 9 versions: 2 journey slots, then one per default rule.
    assert [(c["segment"], c["previous"], c["version"] - base, c["cause"])
            for c in changes_of(out)] == [
        ("journey:awareness", None, 1, "u1-1"),
        ("journey:consideration", "journey:awareness", 2, "u1-1"),
        ("new_user", None, 8, "u1-1"),
        ("needs_enrichment", None, 9, "u1-1"),
        ("journey:decision", "journey:consideration", 9 + 2, "u1-2"),
        ("recent_purchaser", None, 18 + 2 + 5, "u1-3"),
        ("journey:retention", "journey:decision", 27 + 2, "u1-4"),
    ]
    assert all(m.key == b"u1" for m in out)
    final = updates[-1]
    assert (final.user_id, final.version - base, final.events_total) == ("u1", 36, 4)
    assert final.profile["revenue_total"] == "25.0"
    assert final.profile["journey"] == "retention"


def test_bad_input_is_dead_lettered_with_source() -> None:
    """Unusable inputs go to the dead-letter topic as original bytes with reason and source."""
    bad = [b"{not json", None, b'{"type":"track","event":"x","timestamp":"2024-05-01T10:00:00Z"}']
    out, updates = run_flow(messages([JOURNEY[0], *bad]))
    dead = [m for m in out if m.topic == CONFIG.dlq_topic]
    assert [m.value for m in dead] == bad
    assert [dict(m.headers)["segstream.reason"] for m in dead] == [b"not_json", b"empty", b"missing_id"]
    assert [dict(m.headers)["segstream.source"] for m in dead] == [
        b"clickstream/0/1", b"clickstream/0/2", b"clickstream/0/3"]
    assert [u.user_id for u in updates] == ["u1"]


@pytest.mark.parametrize(
    ("workers", "stop"),
    [(1, TestingSource.ABORT), (2, TestingSource.EOF)],
    # ABORT (a crash) hangs Bytewax 0.21's 2-worker cluster_main in-process; the
    # multi-worker stop is EOF here, and real crashes are SIGKILLed in tests/integration.
    ids=["1-worker-abort", "2-workers-eof"],
)
def test_resume_never_gives_a_version_two_contents(tmp_path: Path, workers: int, stop) -> None:  # type: ignore[no-untyped-def]
    """Stopping mid-stream and resuming yields the same changes and final state as one run."""
    users = [f"u{i}" for i in range(5)]
    names = ["Product Viewed", "Checkout Started", "Order Completed", "Order Completed", "Page Viewed"]
    values = [track(u, name, i) for i, name in enumerate(names) for u in users]
    whole_out, whole_updates = run_flow(messages(values), workers=workers)

    init_db_dir(tmp_path, workers)
    recovery = RecoveryConfig(str(tmp_path))
    items: list[object] = messages(values)
    items.insert(12, stop())
    first_out, _ = run_flow(items, workers=workers, recovery=recovery, epoch=timedelta(0))
    second_out, second_updates = run_flow(items, workers=workers, recovery=recovery, epoch=timedelta(0))

    expected = {(c["user_id"], c["version"]): c for c in changes_of(whole_out)}
    seen: dict[tuple[str, int], dict] = {}
    for change in changes_of(first_out) + changes_of(second_out):
        key = (change["user_id"], change["version"])
        assert seen.setdefault(key, change) == change, f"{key} has two contents"
    assert seen == expected
    assert len(changes_of(first_out)) < len(expected)  # the abort really was mid-stream
    last = {u.user_id: u for u in whole_updates}
    resumed_last = {u.user_id: u for u in second_updates}
    assert {k: (v.version, v.events_total, per_user(v.profile)) for k, v in resumed_last.items()} == {
        k: (v.version, v.events_total, per_user(v.profile)) for k, v in last.items()}


def per_user(profile: dict[str, str]) -> dict[str, str]:
    """The profile without ``rfm``, the one field ranked against other users (docs/features.md)."""
    assert profile["rfm"] == "" or len(profile["rfm"]) == 3
    return {k: v for k, v in profile.items() if k != "rfm"}


def own_fields(profile: dict[str, str]) -> dict[str, str]:
    """The profile without the fields that depend on other users.

    ``version`` stays: every feature snapshot takes two versions whatever the
    shared models decide, so a user's versions are their own.
    """
    return {k: v for k, v in profile.items() if k not in POPULATION_FIELDS}


def per_user_replay(lines: list[bytes]) -> dict[str, dict[str, str]]:
    """Each user's events alone, with the watermarks the stream saw them with, then the final one.

    Timers fire when a watermark passes them: giving each event the watermark
    of its partition at that point (as the parse step stamps it) makes the
    user's timeline of events and timers the stream's.
    """
    from segstream.operators.event_time import PartitionWatermark, Stamped  # noqa: PLC0415
    from segstream.operators.features import stamp_event  # noqa: PLC0415
    from segstream.operators.events import Event  # noqa: PLC0415
    from segstream.operators.parse import EventParser  # noqa: PLC0415
    from segstream.operators.user import UserLogic  # noqa: PLC0415

    by_user: dict[str, list[Stamped]] = {}
    clock = PartitionWatermark(CONFIG.allowed_lateness_s)
    for offset, line in enumerate(lines):
        event = EventParser().parse(line, topic="clickstream", partition=0, offset=offset)
        if isinstance(event, Event):
            by_user.setdefault(event.key, []).append(
                stamp_event(event, clock.observe(event.timestamp), "clickstream:0"))
    profiles = {}
    for user, stamped in by_user.items():
        logic = UserLogic(ORACLE_USERS, None)
        updates = []
        for item in stamped:
            updates += logic.on_items([item])
        updates += logic.on_watermark(clock.newest - CONFIG.allowed_lateness_s)
        profiles[user] = updates[-1].profile
    return profiles


def test_stream_equals_each_user_alone_on_generated_log() -> None:
    """Per user, the stream's final profile equals that user's events replayed alone.

    The independent feature-by-feature recomputation is the oracle test in
    tests/integration; this one shows that interleaving with other users and
    batching change nothing.
    """
    from segstream.tools.generate import generate  # noqa: PLC0415

    lines = generate(300, 6000, seed=11).lines  # time-ordered, as a live stream arrives
    # Without journey transitions on model outputs (those depend on the other users).
    # The log has 80 buyers: RFM scores need a population of 10.
    _out, updates = run_flow(messages(lines), segments=replace(ORACLE, min_population=10))
    final = {u.user_id: u.profile for u in updates}
    alone = per_user_replay(lines)
    # The RFM score and the model outputs depend on the other users.
    buyers = [p["rfm"] for p in final.values() if p["last_purchase"]]
    assert all(p["rfm"] == "" for p in final.values() if not p["last_purchase"])
    # All but the first few buyers, whose last update came before 10 buyers, have a score.
    assert sum(1 for rfm in buyers if rfm) >= 0.9 * len(buyers)
    assert {user: own_fields(profile) for user, profile in final.items()} == {
        user: own_fields(profile) for user, profile in alone.items()}


def test_same_log_gives_same_changes() -> None:
    """Replaying the same log with one worker gives byte-identical changes, emitted_at aside."""
    from segstream.tools.generate import generate  # noqa: PLC0415

    lines = generate(100, 2000, seed=5).lines
    first, _ = run_flow(messages(lines))
    second, _ = run_flow(messages(lines))
    assert changes_of(first) == changes_of(second)
    assert [(m.topic, m.key) for m in first] == [(m.topic, m.key) for m in second]


def test_consumer_errors_are_dead_lettered() -> None:
    """A consumer error in the source stream becomes a source_error dead letter, not a crash."""
    from bytewax.connectors.kafka import KafkaError  # noqa: PLC0415
    from confluent_kafka import KafkaError as ConfluentError  # noqa: PLC0415

    broken = KafkaSourceMessage(key=b"k", value=b"partial", topic="clickstream", partition=3, offset=9)
    items = [*messages([JOURNEY[0]]), KafkaError(ConfluentError(ConfluentError._MSG_TIMED_OUT), broken)]
    out, updates = run_flow(items)
    dead = [m for m in out if m.topic == CONFIG.dlq_topic]
    assert [(m.key, m.value) for m in dead] == [(b"k", b"partial")]
    headers = dict(dead[0].headers)
    assert headers["segstream.reason"] == b"source_error"
    assert headers["segstream.source"] == b"clickstream/3/9"
    assert [u.user_id for u in updates] == ["u1"]


@pytest.mark.parametrize("policy", ["apply", "dead_letter"])
def test_late_events_follow_the_policy(policy: str) -> None:
    """An event more than allowed_lateness_s behind its partition is applied or dead-lettered."""
    from segstream.metrics import LATE_EVENTS  # noqa: PLC0415

    before = LATE_EVENTS.labels(policy)._value.get()
    on_time = track("u1", "Product Viewed", 30)
    within = track("u1", "Product Viewed", 21)  # 9 s behind: still on time
    late = track("u1", "Order Completed", 5, revenue=3)  # 25 s behind
    config = Config(allowed_lateness_s=10.0, late_events=policy)
    out, updates = run_flow(messages([on_time, within, late]), config=config)
    dead = [m for m in out if m.topic == CONFIG.dlq_topic]
    assert LATE_EVENTS.labels(policy)._value.get() - before == 1
    final = updates[-1].profile
    if policy == "dead_letter":
        assert [m.value for m in dead] == [late]
        headers = dict(dead[0].headers)
        assert headers["segstream.reason"] == b"late"
        assert b"allowed lateness 10 s" in headers["segstream.detail"]
        assert (final["events_total"], final["late_total"], final["purchases_total"]) == ("2", "0", "0")
    else:
        assert dead == []
        assert (final["events_total"], final["late_total"], final["purchases_total"]) == ("3", "1", "1")
        assert final["first_seen"] == "2024-05-01T10:00:05.000Z"
        assert final["sessions_total"] == "1"


def test_clock_outliers_never_move_a_watermark() -> None:
    """Scenario: one event from the year 9999 and one from 1970 arrive between on-time ones.

    We expect both dead-lettered (future, too_old) and the on-time events that
    follow them on time: with the year-9999 event accepted, every later event of
    the partition would have been late, and its users evicted.
    """
    future = orjson.dumps({"event": "Order Completed", "userId": "u2", "messageId": "f",
                           "timestamp": "9999-12-31T23:59:59Z", "properties": {"revenue": 5}})
    reset = orjson.dumps({"event": "Product Viewed", "userId": "u3", "messageId": "r",
                          "timestamp": "1970-01-01T00:00:00Z"})
    items = [track("u1", "Product Viewed", 30), future, reset, track("u1", "Order Completed", 20)]
    out, updates = run_flow(messages(items), config=Config(late_events="dead_letter"))
    dead = [m for m in out if m.topic == CONFIG.dlq_topic]
    assert [(m.value, dict(m.headers)["segstream.reason"]) for m in dead] == [
        (future, b"future"), (reset, b"too_old")]
    assert {u.user_id for u in updates} == {"u1"}
    final = updates[-1].profile
    assert (final["events_total"], final["late_total"], final["purchases_total"]) == ("2", "0", "1")


def test_eviction_metrics_and_discarded_state() -> None:
    """An idle user is evicted at the end of a bounded input: counted, and its state dropped."""
    from segstream.metrics import EVICTIONS, USERS_IN_STATE  # noqa: PLC0415

    evicted_before = EVICTIONS._value.get()
    users_before = USERS_IN_STATE._value.get()
    values = [track("idle", "Product Viewed", 0), track("busy", "Page Viewed", 30)]
    later = orjson.dumps({"type": "track", "event": "Page Viewed", "userId": "busy",
                          "messageId": "busy-late", "timestamp": "2024-05-01T12:00:00Z"})
    out, updates = run_flow(messages([*values, later]), config=Config(state_ttl_s=3600))
    assert EVICTIONS._value.get() - evicted_before == 1
    assert USERS_IN_STATE._value.get() - users_before == 1  # busy stays, idle was discarded
    assert [(u.user_id, u.evicted) for u in updates][-1] == ("idle", True)
    exits = [c for c in changes_of(out) if c["change"] == "exit"]
    # Idle past its session's end first: a feature snapshot put it in a cluster.
    assert {(c["user_id"], c["segment"]) for c in exits} == {
        ("idle", "journey:consideration"), ("idle", "needs_enrichment"), ("idle", "new_user"),
        ("idle", "cluster:unassigned")}


def test_transitions_and_members_are_counted() -> None:
    """Journey transitions count by (from, to); member gauges follow enters and exits."""
    from segstream.metrics import JOURNEY_TRANSITIONS, SEGMENT_MEMBERS  # noqa: PLC0415

    def transitions(left: str, entered: str) -> float:
        return JOURNEY_TRANSITIONS.labels(left, entered)._value.get()

    def members(kind: str, segment: str) -> float:
        return SEGMENT_MEMBERS.labels(kind, segment)._value.get()

    before = {key: transitions(*key) for key in (("", "awareness"), ("decision", "retention"))}
    in_decision = members("journey", "journey:decision")
    in_retention = members("journey", "journey:retention")
    run_flow(messages(JOURNEY))
    assert transitions("", "awareness") - before["", "awareness"] == 1
    assert transitions("decision", "retention") - before["decision", "retention"] == 1
    assert members("journey", "journey:decision") == in_decision  # entered, then left
    assert members("journey", "journey:retention") - in_retention == 1


def _purchase(user: str, day: float, revenue: float, name: str = "Order Completed") -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1714557600 + day * 86400))
    return orjson.dumps({"event": name, "userId": user, "messageId": f"{user}-{day}-{name}",
                         "timestamp": stamp, "properties": {"revenue": revenue}})


@pytest.mark.parametrize("max_revenue", [1e9, 1e300])
def test_a_single_1e140_purchase_leaves_high_value_alone(max_revenue: float) -> None:
    """Scenario: 150 buyers of 50 and 10 of 500 (high_value: above mean + 2 SD), then one
    purchase of 1e140, then every buyer comes back.

    We expect, with the default bound, the purchase dead-lettered as bad_value and the 10 still
    in high_value after their return. Without the bound (max_revenue 1e300) the one purchase
    moves the mean past everyone else and high_value holds the whale alone: what the bound is for.
    """
    buyers = [(f"b{i}", 50.0) for i in range(150)] + [(f"w{i}", 500.0) for i in range(10)]
    items = [_purchase(user, 0.001 * i, revenue) for i, (user, revenue) in enumerate(buyers)]
    items.append(_purchase("whale", 2.0, 1e140))
    items += [_purchase(user, 3.0 + 0.001 * i, 0.0, "Page Viewed")
              for i, (user, _revenue) in enumerate(buyers)]
    config = Config(max_revenue=max_revenue)
    out, updates = run_flow(messages(items), config=config)
    final = {u.user_id: u.profile for u in updates if not u.evicted}
    high_value = {user for user, profile in final.items() if "high_value" in profile["segments"]}
    dead = [dict(m.headers)["segstream.reason"] for m in out if m.topic == CONFIG.dlq_topic]
    if max_revenue == 1e9:
        assert dead == [b"bad_value"]
        assert high_value == {f"w{i}" for i in range(10)}
    else:
        assert dead == [] and high_value == {"whale"}
