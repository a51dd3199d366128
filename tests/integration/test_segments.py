"""Segments as configuration, end to end: a custom file, renamed events, statistics across processes."""

from __future__ import annotations

import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from segstream.state.redis import RedisStore

from segstream.services import RedisServer, TansuBroker
from segstream.tools.demo import scrape

from .helpers import (
    change_docs,
    cluster_ports,
    make_config,
    start_worker,
    wait_processed,
    worker_env,
)

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

CUSTOM = """
# A shop whose events are named its own way (see SEGSTREAM_TAXONOMY_* below).
[journey]
states = ["visitor", "shopper", "customer"]
initial = "visitor"

[[journey.transitions]]
name = "first_basket"
from = "visitor"
to = "shopper"
on = "add_to_cart"

[[journey.transitions]]
name = "first_order"
from = ["visitor", "shopper"]
to = "customer"
on = "purchase"

[rules.big_spender]
description = "spent more than 30"
when = "revenue_total > 30"

[rules.above_median]
description = "spent more than the median buyer, over all processes"
when = "revenue_total > p50(revenue_total)"

[rules.best_customers]
description = "top two fifths of all buyers in recency and monetary"
when = "rfm_r >= 4 and rfm_m >= 4"

[settings]
min_population = 1
"""


def doc(user: str, name: str, second: int, revenue: float = 0.0) -> bytes:
    stamp = (T0 + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": "track", "event": name, "userId": user,
                         "messageId": f"{user}-{second}", "timestamp": stamp,
                         "properties": {"revenue": revenue}})


def wait_for_profiles(store: RedisStore, events: Counter[str], deadline: float) -> None:
    """Wait until every user's Redis profile has taken ``events[user]`` events."""
    while any(store.profile(u).get("events_total") != str(n) for u, n in events.items()):
        assert time.monotonic() < deadline, "not every profile reached Redis"
        time.sleep(0.1)


def test_custom_segments_file_and_statistics_across_two_processes(
    kafka_broker: TansuBroker, redis_server: RedisServer, topic_factory: Callable[..., str],
    redis_prefix: str, tmp_path: Path,
) -> None:
    """Scenario: a custom segments file and renamed events, two processes on two partitions.

    We expect the custom journey and rules to work without code changes
    (renamed events mapped by the taxonomy alone), and each process's
    population statistics to cover both processes' users: the number of buyers
    and their mean revenue equal a batch computation over the Redis profiles.
    """
    segments_file = tmp_path / "shop.toml"
    segments_file.write_text(CUSTOM)
    config = make_config(kafka_broker, redis_server.url, redis_prefix,
                         topic_factory("in", partitions=2), topic_factory("out"), topic_factory("dlq"))
    users = [f"u{i}" for i in range(40)]
    log = []
    for i, user in enumerate(users):
        log.append((i, user, doc(user, "basket_add", i)))
        if i % 4:  # three users in four buy: last order at hour i % 7, once or twice, 5 % apart
            total = round(10.0 * 1.05**i, 2)
            hours = [i % 7] if i % 3 else [i % 7, i % 7 + 1]
            for hour in hours:
                second = 3600 * hour + 100 + i
                log.append((second, user, doc(user, "order_paid", second,
                                              revenue=round(total / len(hours), 2))))
    log.sort()  # in event time: none is late
    sent = kafka_broker.produce(config.input_topics[0], [(u.encode(), d) for _s, u, d in log])
    port, addresses = cluster_ports(2)  # process i serves metrics on port + i
    env = worker_env(config, "", metrics_port=port) | {
        "SEGSTREAM_SEGMENTS_FILE": str(segments_file),
        "SEGSTREAM_TAXONOMY_ADD_TO_CART": "basket_add",
        "SEGSTREAM_TAXONOMY_PURCHASE": "order_paid",
        "SEGSTREAM_POPULATION_SYNC_S": "0.3",
    }
    check = subprocess_check(segments_file, env)
    assert "visitor -> shopper  on add_to_cart  [first_basket]" in check
    workers = [start_worker(env, "-i", str(i), "-a", addresses, log=tmp_path / f"p{i}.log")
               for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        wait_processed(port, sent, *workers)
        store = RedisStore.from_url(redis_server.url, redis_prefix)
        # `processed` counts events as they are parsed: their profiles reach
        # Redis a batch later, after the exchange between the processes.
        sent_to = Counter(user for _s, user, _d in log)
        wait_for_profiles(store, sent_to, deadline)
        revenues = [float(store.profile(u)["revenue_total"]) for u in users]
        buyers = [r for r in revenues if r > 0]
        # Every process sees every buyer, its own live and the other's through Redis.
        time.sleep(1.0)  # three exchanges
        for i in range(2):
            samples = scrape(port + i)
            stat = {k.split("statistic=")[1].rstrip("}"): v for k, v in samples.items()
                    if k.startswith("segstream_population_statistic{feature=revenue_total")}
            assert stat["users"] == len(buyers), (i, stat)
            assert stat["mean"] == pytest.approx(statistics.fmean(buyers), rel=1e-9)
            assert stat["std"] == pytest.approx(statistics.pstdev(buyers), rel=1e-9)
        summary = store.population_info()["revenue_total"]
        assert summary["users"] == len(buyers)
        # A page view each, after the exchange: every buyer's RFM score and rule are then
        # decided against all buyers of both processes (the views change no contribution).
        views = [(u.encode(), doc(u, "Page Viewed", 10 * 3600 + i)) for i, u in enumerate(users)]
        sent += kafka_broker.produce(config.input_topics[0], views)
        deadline = time.monotonic() + 60
        wait_processed(port, sent, *workers)
        wait_for_profiles(store, sent_to + Counter(users), deadline)
        profiles = {u: store.profile(u) for u in users}
        expected = batch_rfm(profiles)
        assert {u: p["rfm"] for u, p in profiles.items()} == expected
        assert len(set(expected.values()) - {""}) > 5  # the scores really differ
        best = {u for u, score in expected.items() if score and score[0] >= "4" and score[2] >= "4"}
        assert best and store.members("best_customers") == best
        # Both processes' /metrics count their own members; together, every user.
        members = sum(scrape(port + i).get("segstream_segment_members{kind=journey,segment=journey:customer}",
                                           0.0) for i in range(2))
        assert members == len(buyers)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(30) == 0
    changes = change_docs(kafka_broker.read_topic(config.output_topic))
    journey = {(c["user_id"], c["segment"], c["rule"]) for c in changes if c["kind"] == "journey"}
    assert ("u0", "journey:shopper", "first_basket") in journey
    assert ("u1", "journey:customer", "first_order") in journey
    spenders = {c["user_id"] for c in changes if c["segment"] == "big_spender" and c["change"] == "enter"}
    assert spenders == {u for u, r in zip(users, revenues, strict=True) if r > 30}
    assert len(spenders) > 10
    assert all(c["kind"] == "rule" and c["rule"] == "big_spender"
               for c in changes if c["segment"] == "big_spender")
    assert store.members("journey:customer") == {u for u, r in zip(users, revenues, strict=True) if r}
    assert any(c["segment"] == "above_median" for c in changes)
    store.close()


def batch_rfm(profiles: dict[str, dict[str, str]]) -> dict[str, str]:
    """RFM scores recomputed in plain code from the Redis profiles: per dimension, a buyer's
    mid-rank among all buyers in fifths (recency by the hour of the last purchase)."""
    buyers = {u: (int(datetime.fromisoformat(p["last_purchase"]).timestamp() // 3600),
                  int(p["purchases_90d"]), float(p["revenue_90d"]))
              for u, p in profiles.items() if p["last_purchase"]}
    out = dict.fromkeys(profiles, "")
    for user, key in buyers.items():
        digits = ""
        for dim in range(3):
            below = sum(1 for other in buyers.values() if other[dim] < key[dim])
            same = sum(1 for other in buyers.values() if other[dim] == key[dim])
            digits += str(1 + min(4, int(5 * (below + same / 2) / len(buyers))))
        out[user] = digits
    return out


def subprocess_check(segments_file: Path, env: dict[str, str]) -> str:
    """Run `segstream check-config` on the file, as an operator would before deploying it."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.run([sys.executable, "-m", "segstream.cli", "check-config", str(segments_file)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
