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
