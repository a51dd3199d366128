"""Shards (``shards > 1``): which partitions a shard reads, and how the others feed shard 0's learner."""

from __future__ import annotations

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from segstream.flows.connectors import OutMessage, shard_parts
from segstream.flows.segmentation import Sinks, build_flow, model_config
from segstream.operators.models import LearnItem, ModelHub
from segstream.operators.user import UserUpdate

from segstream.config import Config
from segstream.errors import ConfigError, StateError
from tests.flows.test_segmentation import messages, track

SHARDED = Config(shards=2, snapshot_every_events=2, allowed_lateness_s=0, cluster_k=2, cluster_warmup=5,
                 model_learn_topic="learn")
LOG = [track(f"u{u}", name, second)
       for second, name in enumerate(["Product Viewed", "Product Viewed", "Checkout Started",
                                      "Order Completed", "Product Viewed"])
       for u in range(6)]


def sent_metric(kind: str) -> float:
    return REGISTRY.get_sample_value("segstream_model_learn_items_sent_total", {"kind": kind}) or 0.0


def run_shard(config: Config, learn_source: list[object] | None = None
              ) -> tuple[list[OutMessage], list[UserUpdate], ModelHub]:
    kafka_out: list[OutMessage] = []
    redis_out: list[UserUpdate] = []
    hub = ModelHub(model_config(config))
    flow = build_flow(config, source=TestingSource(messages(LOG)), hub=hub,
                      learn_source=None if learn_source is None else TestingSource(learn_source),
                      sinks=Sinks(kafka=TestingSink(kafka_out), redis=TestingSink(redis_out)))
    run_main(flow)
    return kafka_out, redis_out, hub


def test_other_shards_send_what_the_models_learn_from_to_the_learn_topic() -> None:
    """A shard other than 0 has no learner: its snapshots and labels go to ``model_learn_topic``."""
    counted = {kind: sent_metric(kind) for kind in ("snapshot", "label")}
    # A session per event (events 1 s apart): each session-end snapshot is
    # labelled when the user's next event comes.
    out, updates, hub = run_shard(SHARDED.replace(shard=1, session_gap_s=0.5, churn_horizon_s=1))
    sent = [LearnItem.from_json(m.value) for m in out if m.topic == "learn"]
    learned = [item for update in updates for item in update.learn]
    assert len(learned) >= 10  # 6 users, 5 events each, a snapshot every 2 settled
    assert sent == learned
    snapshots = sum(item.cluster_x is not None for item in sent)
    labels = sum(item.churned is not None for item in sent)
    assert snapshots and labels
    assert sent_metric("snapshot") - counted["snapshot"] == snapshots
    assert sent_metric("label") - counted["label"] == labels
    assert not [m for m in out if m.topic == SHARDED.model_events_topic]
    assert hub.models is None  # nothing learned here


def test_shard_0_learns_its_own_and_the_other_shards_items() -> None:
    """Shard 0 learns what the other shards sent too; an unreadable message is dead-lettered."""
    sent = [m for m in run_shard(SHARDED.replace(shard=1))[0] if m.topic == "learn"]
    learn_in = [KafkaSourceMessage(key=None, value=m.value, topic="learn", partition=0, offset=i)
                for i, m in enumerate(sent)]
    learn_in.append(KafkaSourceMessage(key=b"k", value=b'{"cluster_x": 1}', topic="learn",
                                       partition=0, offset=len(sent)))
    out, updates, hub = run_shard(SHARDED, learn_in)
    own = sum(len(update.learn) for update in updates)
    assert hub.models is not None and hub.models.learned == own + len(sent)
    assert any(m.topic == SHARDED.model_events_topic for m in out)
    [dead] = [m for m in out if m.topic == SHARDED.dlq_topic]
    assert dead.value == b'{"cluster_x": 1}'
    headers = dict(dead.headers)
    assert headers["segstream.reason"] == b"wrong_type"
    assert headers["segstream.source"] == f"learn/0/{len(sent)}".encode()
    assert b"not a learn item" in headers["segstream.detail"]
    assert not [m for m in out if m.topic == "learn"]


def test_one_process_has_no_learn_topic() -> None:
    out, updates, hub = run_shard(SHARDED.replace(shards=1))
    assert not [m for m in out if m.topic == "learn"]
    assert hub.models is not None and hub.models.learned == sum(len(u.learn) for u in updates)


@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=3), shards=st.integers(1, 6))
def test_shards_split_the_partitions_by_number(counts: list[int], shards: int) -> None:
    """Every partition goes to exactly one shard, the same number to the same shard on every topic."""
    count = counts[0]
    parts = [f"{p}-topic-{t}" for t in range(len(counts)) for p in range(count)]
    if count < shards:
        with pytest.raises(ConfigError, match="at least"):
            shard_parts(parts, 0, shards)
        return
    taken = [shard_parts(parts, shard, shards) for shard in range(shards)]
    assert sorted(p for part in taken for p in part) == sorted(parts)
    for shard, mine in enumerate(taken):
        assert all(int(p.split("-")[0]) % shards == shard for p in mine)
        assert mine, "a shard with no partition"


def test_shards_need_topics_with_the_same_partition_count() -> None:
    with pytest.raises(ConfigError, match=r"same partition count.*a: 2, b: 3"):
        shard_parts(["0-a", "1-a", "0-b", "1-b", "2-b"], 0, 2)
    assert shard_parts(["0-a", "1-a", "0-b", "1-b", "2-b"], 0, 1) == ["0-a", "1-a", "0-b", "1-b", "2-b"]


finite = st.floats(allow_nan=False, allow_infinity=False)
vectors = st.none() | st.dictionaries(st.text(max_size=8), finite, max_size=4)


@given(st.builds(LearnItem, cluster_x=vectors, churn_x=vectors, churned=st.none() | st.booleans(),
                 predicted=st.none() | finite, event_time=finite))
def test_learn_items_cross_shards_unchanged(item: LearnItem) -> None:
    assert LearnItem.from_json(item.to_json()) == item


@pytest.mark.parametrize("value", [None, b"", b"[]", b"{}", b'{"cluster_x": [1], "churn_x": null, '
                                   b'"churned": null, "predicted": null, "event_time": 0}',
                                   orjson.dumps({"cluster_x": None, "churn_x": None, "churned": "yes",
                                                 "predicted": None, "event_time": 0})])
def test_unreadable_learn_items_raise(value: bytes | None) -> None:
    with pytest.raises(StateError, match="not a learn item"):
        LearnItem.from_json(value)
