"""The Redis store against a real redis-server: layout, version guard, membership."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segstream.operators.events import Change
from segstream.operators.user import UserUpdate
from segstream.state.redis import RedisLayout, RedisStore

from segstream.services import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url, redis_prefix)
    yield s
    s.close()


def enter(version: int, phase: str, previous: str | None) -> Change:
    return Change("u1", "journey", f"journey:{phase}", "enter",
                  None if previous is None else f"journey:{previous}", 0.0, version, f"m{version}")


def update(version: int, events: int, changes: list[Change], journey: str | None = None,
           segments: list[str] | None = None) -> UserUpdate:
    """An update whose profile holds ``journey`` (default: the phase its changes enter last)
    and the rule ``segments`` (default: none)."""
    if journey is None:
        entered = [c.segment for c in changes if c.kind == "journey" and c.change == "enter"]
        journey = entered[-1].partition(":")[2] if entered else ""
    return UserUpdate("u1", version, events, orjson.dumps(
        {"version": str(version), "events_total": str(events), "journey": journey,
         "segments": orjson.dumps(sorted(segments or [])).decode()}), tuple(changes))


def test_key_layout(store: RedisStore, redis_server: RedisServer, redis_prefix: str) -> None:
    """Profiles live at {prefix}user:{id}, members at {prefix}members:{segment}."""
    store.apply([update(1, 1, [enter(1, "awareness", None)])])
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert raw.hgetall(f"{redis_prefix}user:u1")["journey"] == "awareness"
    assert raw.smembers(f"{redis_prefix}members:journey:awareness") == {"u1"}
    assert store.layout == RedisLayout(redis_prefix)


def test_transition_moves_membership(store: RedisStore) -> None:
    """Entering a phase leaves the previous one."""
    store.apply([update(1, 1, [enter(1, "awareness", None)])])
    store.apply([update(2, 2, [enter(2, "decision", "awareness")])])
    assert store.members("journey:awareness") == set()
    assert store.members("journey:decision") == {"u1"}


def test_stale_update_is_ignored(store: RedisStore) -> None:
    """A replayed older update moves neither the profile nor the memberships back."""
    first = update(1, 1, [enter(1, "awareness", None)], journey="awareness")
    second = update(2, 5, [enter(2, "decision", "awareness")], journey="decision")
    assert store.apply([first, second]) == 2
    assert store.apply([first]) == 0
    assert store.profile("u1")["journey"] == "decision"
    assert store.members("journey:awareness") == set()
    assert store.members("journey:decision") == {"u1"}


def test_same_version_more_events_is_applied(store: RedisStore) -> None:
    """Within one version, the update with more events wins; fewer is ignored."""
    store.apply([update(1, 3, [], journey="a")])
    assert store.apply([update(1, 4, [], journey="b")]) == 1
    assert store.apply([update(1, 2, [], journey="c")]) == 0
    assert store.profile("u1")["journey"] == "b"


def test_user_ids_and_segments(store: RedisStore) -> None:
    """Scans list users and member sets under the prefix only."""
    store.apply([update(1, 1, [enter(1, "awareness", None)])])
    assert store.user_ids() == ["u1"]
    assert store.segments() == {"journey:awareness": {"u1"}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 10), st.integers(0, 10)), min_size=1, max_size=6))
def test_crash_replays_converge(store: RedisStore, runs: list[tuple[int, int]]) -> None:
    """Runs that crash and rewind to any earlier point end as one uninterrupted run.

    Per user the sink sees updates in order; a crash makes it see an earlier
    stretch again (at-least-once). Each (advance, rewind) pair applies updates
    up to ``advance`` then rewinds to ``rewind``; the stream then finishes.
    """
    phases = [f"p{i}" for i in range(10)]
    updates = [update(v + 1, v + 1, [enter(v + 1, phases[v], phases[v - 1] if v else None)],
                      journey=phases[v]) for v in range(10)]
    store._client.flushdb()
    position = 0
    for advance, rewind in runs:
        advance = max(advance, position)
        for u in updates[position:advance]:
            store.apply([u])
        position = min(rewind, advance)
    store.apply(updates[position:])
    assert store.profile("u1")["journey"] == "p9"
    assert {k: v for k, v in store.segments().items() if v} == {"journey:p9": {"u1"}}


def test_writes_ride_out_a_redis_restart() -> None:
    """A write issued while redis-server restarts succeeds once it is back."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    server = RedisServer()
    store = RedisStore.from_url(server.url, "r:", retry_s=10)
    try:
        store.apply([update(1, 1, [enter(1, "awareness", None)])])
        server.stop()
        result: list[int] = []
        writer = threading.Thread(target=lambda: result.append(
            store.apply([update(2, 2, [enter(2, "decision", "awareness")])])))
        writer.start()
        time.sleep(0.5)
        server = RedisServer(port=server.port)  # memory-only: the restart lost the data
        writer.join(15)
        assert result == [1]
        assert store.profile("u1")["version"] == "2"
        assert store.members("journey:decision") == {"u1"}
    finally:
        store.close()
        server.stop()


def test_unreachable_redis_raises_after_retrying() -> None:
    """With Redis gone for good, the write fails with a connection error, not silently."""
    from segstream.services import free_port  # noqa: PLC0415

    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "r:", retry_s=0.5)
    with pytest.raises(redis.ConnectionError):
        store.apply([update(1, 1, [])])


def exit_(version: int, segment: str) -> Change:
    return Change("u1", "rule", segment, "exit", None, 0.0, version, "timer:evict")


def test_eviction_deletes_profile_and_memberships(store: RedisStore) -> None:
    """An eviction removes the hash and, through its exits, the member-set entries."""
    store.apply([update(1, 1, [enter(1, "awareness", None),
                               Change("u1", "rule", "needs_enrichment", "enter", None, 0.0, 2, "m")],
                        segments=["needs_enrichment"])])
    assert store.members("needs_enrichment") == {"u1"}
    evicted = UserUpdate("u1", 4, 1, b"{}", (
        Change("u1", "journey", "journey:awareness", "exit", None, 0.0, 3, "timer:evict"),
        exit_(4, "needs_enrichment")), evicted=True)
    assert store.apply([evicted]) == 1
    assert store.profile("u1") == {}
    assert store.segments() == {}


def test_replayed_eviction_never_deletes_a_newer_life(store: RedisStore) -> None:
    """After a crash the eviction replays: the user's newer profile stays."""
    evicted = UserUpdate("u1", 4, 1, b"{}", (exit_(4, "needs_enrichment"),), evicted=True)
    newer = update(10, 1, [Change("u1", "rule", "needs_enrichment", "enter", None, 0.0, 10, "m")],
                   segments=["needs_enrichment"])
    store.apply([evicted, newer])
    assert store.apply([evicted]) == 0
    assert store.profile("u1")["version"] == "10"
    assert store.members("needs_enrichment") == {"u1"}


def test_sink_never_folds_updates_across_an_eviction() -> None:
    """merge_updates keeps before / eviction / after apart, and folds the rest per user."""
    from segstream.flows.connectors import merge_updates  # noqa: PLC0415

    a1, a2 = update(1, 1, [enter(1, "a", None)]), update(2, 2, [enter(2, "b", "a")])
    gone = UserUpdate("u1", 3, 2, b"{}", (exit_(3, "journey:b"),), evicted=True)
    back = update(9, 1, [enter(9, "a", None)])
    again = update(10, 2, [enter(10, "b", "a")])
    merged = merge_updates([a1, a2, gone, back, again])
    assert [(u.version, u.evicted, [c.version for c in u.changes]) for u in merged] == [
        (2, False, [1, 2]), (3, True, [3]), (10, False, [9, 10])]


def test_a_replay_that_decides_another_cluster_leaves_no_stale_membership(
    store: RedisStore,
) -> None:
    """A model decision replayed differently after a crash: Redis keeps one cluster per user.

    Before the crash, version 10 put the user in cluster:2. The replay decides
    cluster:3 at version 10 (skipped: Redis has it), then moves the user on to
    cluster:1 with ``previous`` cluster:3. The user must end in cluster:1 only:
    the script leaves the set of the value Redis holds, not only ``previous``.
    """
    def to(version: int, cluster: str, previous: str) -> UserUpdate:
        change = Change("u1", "cluster", f"cluster:{cluster}", "enter", f"cluster:{previous}",
                        0.0, version, "timer:session_end", model_version=1)
        profile = {"version": str(version), "events_total": str(version), "cluster": cluster}
        return UserUpdate("u1", version, version, orjson.dumps(profile), (change,))

    store.apply([to(9, "1", "unassigned"), to(10, "2", "1")])
    store.apply([to(10, "3", "1")])  # the replay: stale, skipped
    assert store.members("cluster:2") == {"u1"} and store.members("cluster:3") == set()
    store.apply([to(12, "1", "3")])
    assert {seg: m for seg, m in store.segments().items() if m} == {"cluster:1": {"u1"}}
    assert store.profile("u1")["cluster"] == "1"


def test_a_newer_profile_carries_a_replayed_cluster_its_skipped_change_did_not(
    store: RedisStore,
) -> None:
    """The membership of a single-valued kind follows the profile Redis holds.

    Before the crash version 10 put the user in cluster:2. The replay decides
    cluster:3 at version 10 (skipped: Redis has it), and then an event at
    version 11 writes a profile that holds cluster 3 with no cluster change.
    Seen in the SIGKILL integration test: the user ended in two cluster sets.
    """
    def profile(version: int, cluster: str, changes: tuple[Change, ...] = ()) -> UserUpdate:
        fields = {"version": str(version), "events_total": str(version), "cluster": cluster}
        return UserUpdate("u1", version, version, orjson.dumps(fields), changes)

    def enter_cluster(version: int, cluster: str, previous: str) -> Change:
        return Change("u1", "cluster", f"cluster:{cluster}", "enter", f"cluster:{previous}",
                      0.0, version, "timer:session_end", model_version=1)

    store.apply([profile(10, "2", (enter_cluster(10, "2", "1"),))])
    store.apply([profile(10, "3", (enter_cluster(10, "3", "1"),))])  # the replay: stale
    store.apply([profile(11, "3")])
    assert {seg: m for seg, m in store.segments().items() if m} == {"cluster:3": {"u1"}}
    store.apply([profile(12, "1", (enter_cluster(12, "1", "3"),))])
    assert {seg: m for seg, m in store.segments().items() if m} == {"cluster:1": {"u1"}}
    # A profile without the field (an older layout) leaves the membership alone.
    store.apply([UserUpdate("u1", 13, 13, orjson.dumps({"version": "13"}), ())])
    assert store.members("cluster:1") == {"u1"}
    # An eviction whose changes name another cluster still leaves the one Redis holds.
    store.apply([UserUpdate("u1", 20, 13, b"{}", (exit_(20, "cluster:2"),), evicted=True)])
    assert {seg: m for seg, m in store.segments().items() if m} == {}


def test_processes_exchange_population_aggregates_without_scanning_keys(
        redis_server: RedisServer, redis_prefix: str) -> None:
    """Each process gets the others' live aggregates; a stopped one's drop out.

    They are found through a sorted set: a scan of the keyspace, which holds
    every user's hash, would cost Redis a pass over a million keys per exchange.
    """
    a = RedisStore.from_url(redis_server.url, redis_prefix)
    b = RedisStore.from_url(redis_server.url, redis_prefix)
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.mset({f"{redis_prefix}user:u{i}": "x" for i in range(5000)})
        client.config_resetstat()
        assert a.exchange_population("0", {"from": 0}, ttl_s=0.3) == []
        assert b.exchange_population("1", {"from": 1}, ttl_s=30) == [{"from": 0}]
        assert a.exchange_population("0", {"from": 0}, ttl_s=0.3) == [{"from": 1}]
        time.sleep(0.4)  # process 0 stops refreshing: its aggregates expire
        assert b.exchange_population("1", {"from": 1}, ttl_s=30) == []
        assert client.zrange(f"{redis_prefix}population-processes", 0, -1) == [b"1"]
        stats = client.info("commandstats")
        assert "cmdstat_scan" not in stats and "cmdstat_keys" not in stats
    finally:
        a.close()
        b.close()
        client.close()


def test_the_client_packs_commands_in_c() -> None:
    """hiredis (a dependency) packs the sink's script calls: about half its client CPU."""
    from redis.utils import HIREDIS_AVAILABLE  # noqa: PLC0415

    assert HIREDIS_AVAILABLE


def test_send_apply_lands_before_its_replies_are_read(store: RedisStore, redis_server: RedisServer,
                                                      redis_prefix: str) -> None:
    """The sink's way: Redis runs a sent batch while the worker goes on; ``result`` reads its count."""
    store.apply([update(1, 1, [enter(1, "awareness", None)])])  # loads the script
    pending = store.send_apply([update(2, 2, [enter(2, "decision", "awareness")])])
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    deadline = time.monotonic() + 5
    while raw.hget(f"{redis_prefix}user:u1", "journey") != "decision":
        assert time.monotonic() < deadline, "the sent batch did not land without reading its replies"
        time.sleep(0.01)
    assert pending.result() == 1
    assert store.members("journey:decision") == {"u1"}
    assert store.send_apply([]).result() == 0


def test_send_apply_survives_a_lost_script_and_a_killed_connection(
        store: RedisStore, redis_server: RedisServer) -> None:
    """A restart (scripts gone) or a dropped connection before the replies: applied again, once."""
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    raw.script_flush()
    assert store.send_apply([update(1, 1, [enter(1, "awareness", None)])]).result() == 1
    assert store.profile("u1")["journey"] == "awareness"

    pending = store.send_apply([update(2, 2, [enter(2, "decision", "awareness")])])
    raw.client_kill_filter(_type="normal", skipme=True)
    # Whether the batch landed before the kill or not, it is there exactly once.
    assert pending.result() in (0, 1)
    assert store.profile("u1")["journey"] == "decision"
    assert store.members("journey:awareness") == set()
    assert store.members("journey:decision") == {"u1"}


def test_send_apply_raises_a_script_error_and_the_store_goes_on(
        store: RedisStore, redis_server: RedisServer, redis_prefix: str) -> None:
    """An error reply raises; the connection's unread replies do not leak into the next call."""
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    raw.set(f"{redis_prefix}user:u1", "not a hash")
    other = UserUpdate("u2", 1, 1, orjson.dumps({"version": "1", "journey": "awareness"}), ())
    pending = store.send_apply([update(1, 1, []), other])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pending.result()
    raw.delete(f"{redis_prefix}user:u1")
    assert store.send_apply([update(1, 1, []), other]).result() == 2
    assert store.user_ids() == ["u1", "u2"]


# --- exact versions, and membership that always follows the stored profile ---------------

BOUNDARY = 2**53
"""Where doubles stop telling integers apart: Lua's tonumber sees 2^53 + 1 as 2^53."""


def test_versions_are_compared_exactly_beyond_2_to_the_53(store: RedisStore) -> None:
    """A newer version one above 2^53 wins, an older one is skipped, an eviction compares alike."""
    store.apply([update(BOUNDARY, 1, [], journey="a", segments=["loyal"])])
    assert store.apply([update(BOUNDARY + 1, 1, [], journey="b", segments=[])]) == 1
    assert store.profile("u1")["journey"] == "b"
    assert store.members("loyal") == set()
    assert store.apply([update(BOUNDARY, 9, [], journey="a", segments=["loyal"])]) == 0
    assert store.members("loyal") == set() and store.members("journey:b") == {"u1"}
    assert store.apply([UserUpdate("u1", BOUNDARY, 1, b"{}", (), evicted=True)]) == 0
    assert store.profile("u1")["journey"] == "b"
    assert store.apply([UserUpdate("u1", BOUNDARY + 1, 1, b"{}", (), evicted=True)]) == 1
    assert store.profile("u1") == {} and store.segments() == {}


def test_a_replay_that_decides_a_rule_otherwise_leaves_no_stale_membership(store: RedisStore) -> None:
    """Scenario: before a crash, version 10 put the user in high_value (a population statistic).
    The replay decides otherwise at version 10 (skipped: Redis has it) and writes version 12
    without high_value and without an exit (it never entered). We expect the user out of
    seg:members:high_value, as the profile says, and out of every set once evicted."""
    store.apply([update(10, 3, [Change("u1", "rule", "high_value", "enter", None, 0.0, 10, "m")],
                        journey="decision", segments=["high_value", "loyal"])])
    assert store.apply([update(10, 3, [], journey="decision", segments=["loyal"])]) == 0
    store.apply([update(12, 4, [], journey="decision", segments=["loyal"])])
    assert {seg: m for seg, m in store.segments().items() if m} == {
        "journey:decision": {"u1"}, "loyal": {"u1"}}
    store.apply([update(10, 3, [], journey="decision", segments=["high_value", "loyal"])])
    assert store.members("high_value") == set()
    store.apply([UserUpdate("u1", 20, 4, b"{}", (), evicted=True)])
    assert {seg: m for seg, m in store.segments().items() if m} == {}


RULES = ("high_value", "loyal", "cart_abandoner")
USERS = ("u0", "u1", "u2")
VERSIONS = st.integers(0, 5).map(lambda k: BOUNDARY - 3 + k)


def test_redis_converges_to_the_newest_profile_under_any_interleaving(
        redis_server: RedisServer, redis_prefix: str) -> None:
    """A state machine against a real redis-server: random writes (old and new, deciding
    anything), replays and evictions; after every step each user is in exactly the sets their
    stored profile lists, an evicted user in none, and the profile is the newest written."""
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test  # noqa: PLC0415

    class Convergence(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = RedisStore.from_url(redis_server.url, redis_prefix)
            self.store._client.flushdb()
            self.model: dict[str, tuple[int, int, dict[str, str]] | None] = dict.fromkeys(USERS)

        def teardown(self) -> None:
            self.store.close()

        @rule(user=st.sampled_from(USERS), version=VERSIONS, events=st.integers(0, 3),
              rules=st.sets(st.sampled_from(RULES)), journey=st.sampled_from(["", "a", "b"]),
              cluster=st.sampled_from(["", "1", "2"]), band=st.sampled_from(["", "low", "high"]))
        def write(self, user: str, version: int, events: int, rules: set[str], journey: str,
                  cluster: str, band: str) -> None:
            fields = {"version": str(version), "events_total": str(events), "journey": journey,
                      "cluster": cluster, "churn_band": band,
                      "segments": orjson.dumps(sorted(rules)).decode()}
            self.store.apply([UserUpdate(user, version, events, orjson.dumps(fields), ())])
            held = self.model[user]
            if held is None or (version, events) > held[:2]:
                self.model[user] = (version, events, fields)

        @rule(user=st.sampled_from(USERS), version=VERSIONS)
        def evict(self, user: str, version: int) -> None:
            self.store.apply([UserUpdate(user, version, 0, b"{}", (), evicted=True)])
            held = self.model[user]
            if held is None or version >= held[0]:
                self.model[user] = None

        @invariant()
        def sets_follow_the_stored_profile(self) -> None:
            sets = self.store.segments()
            for user, held in self.model.items():
                expected: set[str] = set()
                if held is None:
                    assert self.store.profile(user) == {}
                else:
                    fields = held[2]
                    assert self.store.profile(user) == fields
                    expected = set(orjson.loads(fields["segments"]))
                    expected |= {f"{kind}:{fields[name]}" for kind, name in
                                 (("journey", "journey"), ("cluster", "cluster"),
                                  ("churn", "churn_band")) if fields[name]}
                assert {seg for seg, members in sets.items() if user in members} == expected

    run_state_machine_as_test(Convergence, settings=settings(
        max_examples=60, stateful_step_count=30, deadline=None))
