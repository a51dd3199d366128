"""Fault injection against the real broker and redis-server: kills, pauses, restarts, hostile input.

Each case is bounded in time and states what it injects and what it expects:
nothing a producer sends and no outage stops, poisons or silently corrupts the
worker. The figures of a run are in ``docs/reliability.md``, with the command.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from segstream.operators.user import POPULATION_FIELDS
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.services import RedisServer, TansuBroker, free_port
from segstream.tools.generate import generate

from .helpers import (
    change_docs,
    keyed,
    make_config,
    start_worker,
    wait_processed,
    wait_ready,
    worker_env,
)

pytestmark = pytest.mark.integration

SINGLE_VALUED = {"journey": "journey", "cluster": "cluster", "churn": "churn_band"}
MODEL_KINDS = ("cluster:", "churn:")
OTHERS_DECIDE = ("churn_model", "high_value")
"""Decisions that read other users (the churn model, the population statistic of
high_value): a replay may take them otherwise (README, Guarantees)."""


def report(line: str) -> None:
    """Print a figure of the suite (``pytest -s`` shows it; docs/reliability.md quotes it)."""
    print(f"[faults] {line}")  # noqa: T201


def memberships_follow_profiles(url: str, prefix: str) -> dict[str, dict[str, str]]:
    """Assert that every user is in exactly the sets their profile lists; return the profiles."""
    store = RedisStore.from_url(url, prefix)
    try:
        profiles = {user: store.profile(user) for user in store.user_ids()}
        members: dict[str, set[str]] = defaultdict(set)
        for segment, users in store.segments().items():
            for user in users:
                members[user].add(segment)
        for user, profile in profiles.items():
            listed = set(orjson.loads(profile["segments"]))
            listed |= {f"{kind}:{profile[field]}" for kind, field in SINGLE_VALUED.items()
                       if profile.get(field)}
            assert members.pop(user, set()) == listed, user
        assert not members, f"users in sets without a profile: {sorted(members)[:5]}"
        return profiles
    finally:
        store.close()


# --- SIGKILL at random points, with the shipped segments file ------------------------------


def affected_by_others(changes: list[dict]) -> set[str]:
    """Users with a decision that depends on other users, in a run's journey and rule changes."""
    return {c["user_id"] for c in changes if c["rule"] in OTHERS_DECIDE or c["segment"] in OTHERS_DECIDE}


def test_sigkill_at_random_points_with_the_shipped_segments(
        kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
        tmp_path: Path) -> None:
    """Scenario: a tailing worker on the shipped segments file (a rule on a population
    statistic, a journey transition on the churn model) is SIGKILLed at 5 random points while
    a generated clickstream streams in, restarted each time on its recovery directory, then
    finishes the input.

    We expect, against an uninterrupted run: the same journey and rule changes, as the same
    (user_id, version) with the same content, and the same Redis profiles, for every user none
    of whose decisions read other users; those that did are counted and reported. Every user in
    both runs is in exactly the member sets their profile lists, and no (user_id, version) has
    two contents.
    """
    log = generate(300, 14000, seed=11, days=30)
    events = keyed(log.lines)
    first, rest = events[:3000], events[3000:]
    input_topic = topic_factory("clicks", partitions=2)
    crashy = make_config(kafka_broker, redis_server.url, "kill:", input_topic,
                         topic_factory("out-kill"), topic_factory("dlq-kill"))
    clean = make_config(kafka_broker, redis_server.url, "whole:", input_topic,
                        topic_factory("out-whole"), topic_factory("dlq-whole"))
    kafka_broker.produce(input_topic, first)
    port = free_port()
    env = worker_env(crashy, tmp_path / "recovery", metrics_port=port, snapshot_interval_s=0.3)
    rng = random.Random(5)

    def trickle() -> None:  # ~500 events/s for about 22 s, as a live stream
        for i in range(0, len(rest), 275):
            kafka_broker.produce(input_topic, rest[i:i + 275])
            time.sleep(0.5)

    producer = threading.Thread(target=trickle)
    kills = 0
    worker = start_worker(env, log=tmp_path / "worker.log")
    try:
        wait_processed(port, len(first) // 2, worker)
        producer.start()
        while kills < 5 or producer.is_alive():
            time.sleep(rng.uniform(0.3, 1.5))
            if kills < 5:
                assert producer.is_alive(), f"only {kills} kills landed while the input streamed in"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            kills += 1
            worker = start_worker(env, log=tmp_path / "worker.log")
            wait_ready(port, worker)
        producer.join()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        producer.join()
    resumed = start_worker(env, "--until-end", log=tmp_path / "worker.log")
    assert resumed.wait(180) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    whole = start_worker(worker_env(clean, tmp_path / "recovery-whole"), "--until-end",
                         log=tmp_path / "whole.log")
    assert whole.wait(180) == 0, (tmp_path / "whole.log").read_text()[-3000:]

    crashy_changes = [c for c in change_docs(kafka_broker.read_topic(crashy.output_topic))
                      if not c["segment"].startswith(MODEL_KINDS)]
    clean_changes = [c for c in change_docs(kafka_broker.read_topic(clean.output_topic))
                     if not c["segment"].startswith(MODEL_KINDS)]
    affected = affected_by_others(crashy_changes) | affected_by_others(clean_changes)
    expected = {(c["user_id"], c["version"]): c for c in clean_changes if c["user_id"] not in affected}
    seen: dict[tuple[str, int], dict] = {}
    for change in crashy_changes:
        key = (change["user_id"], change["version"])
        if change["user_id"] in affected:
            continue
        assert seen.setdefault(key, change) == change, f"{key} has two contents"
    assert seen == expected
    duplicates = len(crashy_changes) - len({(c["user_id"], c["version"]) for c in crashy_changes})

    crashy_profiles = memberships_follow_profiles(redis_server.url, "kill:")
    clean_profiles = memberships_follow_profiles(redis_server.url, "whole:")
    assert crashy_profiles.keys() == clean_profiles.keys()

    def own(profile: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in profile.items() if k not in (*POPULATION_FIELDS, "updated_at")}

    differing = {user for user in clean_profiles
                 if own(crashy_profiles[user]) != own(clean_profiles[user])}
    assert differing <= affected, sorted(differing - affected)[:5]
    users = len(clean_profiles)
    report(f"SIGKILL x{kills}: {users} users, {len(clean_changes)} journey/rule changes in the "
           f"uninterrupted run, {duplicates} replayed duplicates; {len(affected)} users with a "
           f"decision reading other users (churn_model, high_value), of which "
           f"{len(differing)} ended with another profile; every other user equal")
    assert len(affected) < users // 2, "most users must be compared exactly"


# --- outages while tailing at a steady rate -----------------------------------------------

STEADY_USERS = 200
STEADY_RATE = 300
"""Events per second the steady producer sends."""
START = 1714557600  # 2024-05-01T10:00:00Z


def steady_stream(seconds: float) -> tuple[list[tuple[bytes, bytes]], Counter[str]]:
    """In-order events at one per (simulated) second, and how many each user got."""
    rng = random.Random(7)
    names = ["Page Viewed", "Product Viewed", "Product Added", "Order Completed"]
    out, counts = [], Counter[str]()
    for i in range(int(seconds * STEADY_RATE)):
        user = f"s{rng.randrange(STEADY_USERS)}"
        doc = {"event": rng.choice(names), "userId": user, "messageId": f"m{i}",
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + i)),
               "properties": {"revenue": rng.randrange(1, 200)}}
        out.append((user.encode(), orjson.dumps(doc)))
        counts[user] += 1
    return out, counts


def healthz(port: int) -> tuple[int, dict]:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def paused_while_probing(pid: int, port: int, seconds: float = 10.0) -> list[tuple[int, dict]]:
    """SIGSTOP ``pid`` for ``seconds``, asking the worker's /healthz every half second meanwhile."""
    answers = []
    os.kill(pid, signal.SIGSTOP)
    try:
        paused = time.monotonic()
        while time.monotonic() - paused < seconds:
            answers.append(healthz(port))
            time.sleep(0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    return answers


def tail_through(broker: TansuBroker, redis_url: str, tmp_path: Path,
                 fault: Callable[[int, Callable[[], None]], None], *, seconds: float = 18.0,
                 burst_s: float = 0.0, env: dict[str, str] | None = None) -> dict[str, int]:
    """Tail a steady stream, inject ``fault(metrics_port, burst)`` 3 s in, then check Redis
    lost nothing.

    ``burst()`` produces the stream's last ``burst_s`` seconds at once (a backlog), when the
    fault chooses to. The worker may survive the fault or exit non-zero; then it is restarted
    on its recovery directory, as a platform would. Returns the worker's exit codes by name.
    """
    events, counts = steady_stream(seconds + burst_s)
    held = int(burst_s * STEADY_RATE)
    events, backlog = events[:len(events) - held], events[len(events) - held:]
    topic, out, dlq = (f"{name}-{os.urandom(4).hex()}" for name in ("in", "out", "dlq"))
    broker.create_topics([topic, out, dlq, f"{out}-model-events"])
    prefix = f"f{os.urandom(4).hex()}:"
    config = make_config(broker, redis_url, prefix, topic, out, dlq)
    port = free_port()
    env = worker_env(config, tmp_path / "recovery", metrics_port=port,
                     snapshot_interval_s=1.0) | (env or {})
    chunk = STEADY_RATE // 10

    def steady() -> None:
        for i in range(0, len(events), chunk):
            broker.produce(topic, events[i:i + chunk])
            time.sleep(0.1)

    codes: dict[str, int] = {}
    worker = start_worker(env, log=tmp_path / "worker.log")
    producer = threading.Thread(target=steady)
    try:
        wait_ready(port, worker)
        producer.start()
        time.sleep(3.0)
        burst_sent: list[bool] = []
        fault(port, lambda: (broker.produce(topic, backlog), burst_sent.append(True)))
        producer.join()
        if backlog and not burst_sent:
            broker.produce(topic, backlog)
        if worker.poll() is not None:
            codes["during"] = worker.returncode
            worker = start_worker(env, log=tmp_path / "worker.log")
        deadline = time.monotonic() + 90
        store = RedisStore.from_url(redis_url, prefix)
        while True:
            got = {user: int(store.profile(user).get("events_total") or 0) for user in counts}
            if got == dict(counts):
                break
            assert time.monotonic() < deadline, (
                f"Redis is missing events: {sum(counts.values()) - sum(got.values())} of "
                f"{sum(counts.values())}; worker log:\n"
                + (tmp_path / "worker.log").read_text()[-2000:])
            if worker.poll() is not None:
                codes.setdefault("after", worker.returncode)
                worker = start_worker(env, log=tmp_path / "worker.log")
            time.sleep(0.2)
        store.close()
        worker.send_signal(signal.SIGTERM)
        codes["stop"] = worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
        producer.join()
    assert codes["stop"] == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert all(code != 0 for name, code in codes.items() if name != "stop"), codes
    memberships_follow_profiles(redis_url, prefix)
    assert not [r for r in broker.read_topic(dlq)], "no input was bad"
    report(f"{sum(counts.values())} events at {STEADY_RATE}/s through the fault, exit codes "
           f"{codes}: nothing missing in Redis")
    return codes


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker of this test's own, so pausing it pauses no other test."""
    with TansuBroker() as broker:
        yield broker


def test_redis_paused_10_s_while_tailing(own_broker: TansuBroker, tmp_path: Path) -> None:
    """Scenario: redis-server is paused (SIGSTOP) for 10 s while the worker tails at 300/s.

    We expect /healthz to answer 503 naming the failing Redis sink during the pause, the
    worker to ride it out (commands time out and are retried within outage_give_up_s),
    /healthz ready again after, and nothing missing in Redis.
    """
    server = RedisServer()
    answers: list[tuple[int, dict]] = []

    def pause(port: int, _burst: Callable[[], None]) -> None:
        assert server.proc is not None
        answers.extend(paused_while_probing(server.proc.pid, port))
        deadline = time.monotonic() + 30
        while healthz(port)[0] != 200:
            assert time.monotonic() < deadline, healthz(port)
            time.sleep(0.2)

    try:
        codes = tail_through(own_broker, server.url, tmp_path, pause)
    finally:
        server.stop()
    assert "during" not in codes, "the worker survives a 10 s pause"
    failing = [body for status, body in answers
               if status == 503 and any("sink redis failing" in p for p in body["problems"])]
    assert failing, answers[-1]
    report(f"Redis paused 10 s: /healthz answered 503 in {len(failing)} of {len(answers)} probes "
           f"during the pause ({failing[0]['problems'][0]})")


def test_redis_killed_and_restarted_after_10_s_while_tailing(own_broker: TansuBroker,
                                                             tmp_path: Path) -> None:
    """Scenario: redis-server (AOF on, as in production) is killed with SIGKILL while the worker
    tails, and restarted on the same port 10 s later.

    We expect the worker to survive (connections refused are retried within
    outage_give_up_s) or to exit non-zero and resume on restart; either way nothing is
    missing in Redis afterwards.
    """
    data = tmp_path / "redis-data"
    server = RedisServer(data_dir=data)
    holder = [server]

    def kill_and_restart(port: int, _burst: Callable[[], None]) -> None:
        assert holder[0].proc is not None
        holder[0].proc.kill()
        holder[0].proc.wait()
        time.sleep(10.0)
        holder[0] = RedisServer(port=holder[0].port, data_dir=data)

    try:
        tail_through(own_broker, server.url, tmp_path, kill_and_restart)
    finally:
        holder[0].stop()


def test_broker_paused_10_s_while_tailing(own_broker: TansuBroker, tmp_path: Path) -> None:
    """Scenario: the Kafka-protocol broker is paused (SIGSTOP) for 10 s while the worker tails,
    just after a backlog of 10 s of events was produced at once (health_stall_s 3).

    We expect /healthz to answer 503 during the pause (the epoch's wait for the producer blocks
    the worker, or input waits while nothing is consumed), and the worker to resume consuming
    when the broker does, with nothing lost: Redis ends with every event the producer sent.
    """
    server = RedisServer()
    answers: list[tuple[int, dict]] = []

    def pause(port: int, burst: Callable[[], None]) -> None:
        assert own_broker.proc is not None
        burst()
        answers.extend(paused_while_probing(own_broker.proc.pid, port))

    try:
        tail_through(own_broker, server.url, tmp_path, pause, burst_s=10.0,
                     env={"SEGSTREAM_HEALTH_STALL_S": "3"})
    finally:
        server.stop()
    unready = [body["problems"] for status, body in answers if status == 503]
    report(f"broker paused 10 s: /healthz answered 503 in {len(unready)} of {len(answers)} "
           f"probes ({unready[0][0] if unready else 'none'})")
    assert any("the worker is blocked" in p or "input is waiting" in p
               for problems in unready for p in problems), answers[-1]


# --- a fuzz run through the running flow ----------------------------------------------------

HOSTILE = int(os.environ.get("SEGSTREAM_FUZZ_HOSTILE", "200000"))
"""Hostile messages in the fuzz run (the issue asks for at least 200,000)."""
MAX_EVENT_BYTES = Config().max_event_bytes
REASONS = {"empty", "oversized", "not_json", "not_object", "bad_type", "missing_event", "missing_id",
           "missing_timestamp", "bad_timestamp", "wrong_type", "bad_value", "future", "too_old"}


def is_json_object(raw: bytes) -> bool:
    """Whether ``raw`` is a JSON object, by the standard library (not the code under test)."""
    import json  # noqa: PLC0415

    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


class Fuzz:
    """Hostile messages of every kind, each with the reasons it may be dead-lettered for, and
    valid events (ids with NUL, 200-character and integer ids, sizes just under the limit)
    that must all reach Redis."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = START
        self.valid: list[tuple[bytes, bytes]] = []
        self.per_user: Counter[str] = Counter()
        self.hostile: list[tuple[bytes, set[str]]] = []

    def event(self, user: object = None, **fields: object) -> dict:
        self.clock += 1
        doc: dict = {"event": self.rng.choice(["Product Viewed", "Order Completed", "Page Viewed"]),
                     "userId": user if user is not None else f"v{self.rng.randrange(500)}",
                     "messageId": f"f{self.clock}",
                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock)),
                     "properties": {"revenue": self.rng.randrange(0, 300)}}
        doc.update(fields)
        return doc

    def add_valid(self, doc: dict, raw: bytes | None = None) -> None:
        raw = orjson.dumps(doc) if raw is None else raw
        key = str(doc["userId"])
        self.valid.append((key.encode(), raw))
        self.per_user[key] += 1

    def add_hostile(self, raw: bytes, reasons: set[str]) -> None:
        assert not reasons - REASONS
        self.hostile.append((raw, reasons))

    def valid_one(self) -> None:
        kind = self.rng.random()
        if kind < 0.02:
            self.add_valid(self.event(user=self.rng.choice(["n\x00l", "\x00", "é" * 200, 4242])))
        elif kind < 0.04:  # padded to just under max_event_bytes
            doc = self.event()
            size = len(orjson.dumps({**doc, "pad": ""}))
            doc["pad"] = "x" * (MAX_EVENT_BYTES - size - self.rng.randrange(0, 50))
            self.add_valid(doc)
        else:
            self.add_valid(self.event())

    def hostile_one(self) -> None:  # noqa: C901 - one case per kind of hostile input
        rng, kind = self.rng, self.rng.randrange(9)
        if kind == 0:  # random bytes
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            if not is_json_object(raw):
                self.add_hostile(raw, {"empty", "not_json", "not_object"})
        elif kind == 1:  # truncated JSON
            whole = orjson.dumps(self.event())
            raw = whole[:rng.randrange(0, len(whole) - 1)]
            self.add_hostile(raw, {"empty", "not_json"})
        elif kind == 2:  # deep nesting
            depth = rng.choice([1100, 5000, 10_000])
            self.add_hostile(orjson.dumps(self.event())[:-1] + b',"properties":' + b"[" * depth
                             + b"]" * depth + b"}", {"not_json"})
        elif kind == 3:  # just over max_event_bytes
            doc = self.event(pad="x" * (MAX_EVENT_BYTES + rng.randrange(1, 50)))
            self.add_hostile(orjson.dumps(doc), {"oversized"})
        elif kind == 4:  # a wrong type in one field
            field, value, reason = rng.choice([
                ("type", 5, "bad_type"), ("type", "shout", "bad_type"), ("event", 5, "wrong_type"),
                ("event", [], "wrong_type"), ("userId", [1], "wrong_type"), ("userId", 1.5, "wrong_type"),
                ("userId", {"a": 1}, "wrong_type"), ("userId", True, "wrong_type"),
                ("timestamp", 1714557600, "bad_timestamp"), ("timestamp", [], "bad_timestamp"),
                ("timestamp", "yesterday", "bad_timestamp"), ("timestamp", None, "missing_timestamp"),
                ("properties", [], "wrong_type"), ("properties", "x", "wrong_type"),
                ("context", 5, "wrong_type"), ("traits", [1], "wrong_type"),
                ("properties", {"revenue": "12"}, "wrong_type"),
                ("properties", {"revenue": True}, "wrong_type"),
                ("properties", {"price": "x"}, "wrong_type"),
                ("properties", {"products": [{"quantity": []}]}, "wrong_type"),
            ])
            doc = self.event(**{field: value})
            if value is None:
                del doc[field]
            self.add_hostile(orjson.dumps(doc), {reason})
        elif kind == 5:  # ids that cannot be read, or none
            raw = orjson.dumps(self.event(user="PLACEHOLDER")).replace(b'"PLACEHOLDER"', rng.choice(
                [b'"\\ud800"', b'"a\\udfffb"', b'""', b"null"]))
            self.add_hostile(raw, {"not_json"} if b"\\u" in raw else {"missing_id"})
        elif kind == 6:  # extreme numbers
            text = rng.choice([b"1e303", b"-1e10", b"1e400", b"18446744073709551616", b"1e140"])
            raw = orjson.dumps(self.event()).replace(b'"revenue":', b'"revenue":' + text + b',"r":')
            self.add_hostile(raw, {"not_json"} if text == b"1e400" else {"bad_value"})
        elif kind == 7:  # extreme timestamps
            stamp, reason = rng.choice([("9999-12-31T23:59:59Z", "future"),
                                        ("2999-01-01T00:00:00Z", "future"),
                                        ("1970-01-01T00:00:00Z", "too_old"),
                                        ("1999-12-31T23:59:59Z", "too_old"),
                                        ("0001-01-01T00:00:00+01:00", "bad_timestamp"),
                                        ("9999-12-31T23:59:59-23:59", "bad_timestamp"),
                                        ("2024-13-01T00:00:00Z", "bad_timestamp")])
            self.add_hostile(orjson.dumps(self.event(timestamp=stamp)), {reason})
        else:  # not objects, no event, no id at all
            raw, reason = rng.choice([(b"[1,2,3]", "not_object"), (b'"text"', "not_object"),
                                      (b"null", "not_object"), (b"", "empty"),
                                      (b'{"type":"track","userId":"u","timestamp":"2024-05-01T10:00:00Z"}',
                                       "missing_event"),
                                      (b'{"event":"x","timestamp":"2024-05-01T10:00:00Z"}', "missing_id")])
            self.add_hostile(raw, {reason})


def test_a_fuzz_run_of_hostile_messages_through_the_running_worker(
        own_broker: TansuBroker, tmp_path: Path) -> None:
    """Scenario: 200,000 hostile messages (random bytes, truncated JSON, 10k-deep nesting,
    sizes around max_event_bytes, wrong types in every field, lone surrogates and NULs in ids,
    extreme numbers and timestamps) mixed with 20,000 valid events, into a tailing worker.

    We expect no crash, every hostile message dead-lettered with a reason it allows (its bytes
    kept), and every valid event, the odd ones included, reflected in Redis.
    """
    fuzz = Fuzz(seed=19)
    while len(fuzz.hostile) < HOSTILE:
        fuzz.hostile_one()
    for _ in range(HOSTILE // 10):
        fuzz.valid_one()
    # Hostile messages anywhere; valid ones in their order (on time).
    slots = sorted(fuzz.rng.sample(range(len(fuzz.hostile) + len(fuzz.valid)), len(fuzz.valid)))
    messages: list[tuple[bytes | None, bytes]] = []
    valid, hostile = iter(fuzz.valid), iter(fuzz.hostile)
    taken = set(slots)
    for position in range(len(fuzz.hostile) + len(fuzz.valid)):
        if position in taken:
            messages.append(next(valid))
        else:
            messages.append((b"hostile", next(hostile)[0]))
    server = RedisServer()
    topic, out, dlq = (f"{name}-{os.urandom(4).hex()}" for name in ("fuzz", "out", "dlq"))
    own_broker.create_topics([topic], partitions=2)
    own_broker.create_topics([out, dlq, f"{out}-model-events"])
    config = make_config(own_broker, server.url, "fz:", topic, out, dlq)
    port = free_port()
    worker = start_worker(worker_env(config, tmp_path / "recovery", metrics_port=port),
                          log=tmp_path / "worker.log")
    started = time.monotonic()
    try:
        wait_ready(port, worker)
        own_broker.produce(topic, messages)
        wait_processed(port, len(messages), worker, timeout=300)
        store = RedisStore.from_url(server.url, "fz:")
        deadline = time.monotonic() + 60
        while {u: int(store.profile(u).get("events_total") or 0) for u in fuzz.per_user} != dict(
                fuzz.per_user):
            assert time.monotonic() < deadline, "valid events missing in Redis"
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "worker.log").read_text()[-2000:]
        memberships_follow_profiles(server.url, "fz:")
        store.close()
    finally:
        if worker.poll() is None:
            worker.kill()
        server.stop()
    dead = own_broker.read_topic(dlq)
    expected = Counter(raw for raw, _ in fuzz.hostile)
    assert Counter(record.value for record in dead) == expected
    allowed = defaultdict(set)
    for raw, reasons in fuzz.hostile:
        allowed[raw] |= reasons
    by_reason: Counter[str] = Counter()
    for record in dead:
        reason = dict(record.headers)["segstream.reason"].decode()
        assert reason in allowed[record.value], (reason, record.value[:80])
        by_reason[reason] += 1
    report(f"fuzz: {len(fuzz.hostile)} hostile messages and {len(fuzz.valid)} valid events in "
           f"{elapsed:.0f} s (Tansu); 0 crashes; dead letters by reason {dict(sorted(by_reason.items()))}; "
           f"all {len(fuzz.per_user)} valid users' events in Redis")
