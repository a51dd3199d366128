"""River's online clusterers on segstream's feature snapshots: which one, and why.

    python -m benchmarks.clusterer_comparison            # 2,000 users, 100k events, seed 1

The snapshot stream is the one the learner step sees: a generated log
(planted personas) through the real per-user logic, every feature snapshot's
clustering vector in order. Each clusterer runs behind River's
``StandardScaler``, predict then learn, on the same stream; at the end it
assigns each user's last snapshot, scored against the personas with the
adjusted Rand index. "stable" is the share of the last 2,000 snapshots that a
copy taken half-way assigns the same id as the final model; "ids" the number
of distinct ids the final model gives those users. segstream's own
``ClusterModel`` (k-means++-seeded ``KMeans``, scale frozen after the
warm-up) is the last row.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import river.cluster
import river.compose
import river.preprocessing
from segstream.operators.event_time import PartitionWatermark
from segstream.operators.events import Event
from segstream.operators.features import stamp_event
from segstream.operators.models import ClusterModel, ModelConfig
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic

from benchmarks.models import adjusted_rand_index
from segstream.tools.generate import generate

cluster: Any = river.cluster
preprocessing: Any = river.preprocessing


def snapshot_stream(users: int, events: int, seed: int) -> tuple[list[tuple[str, dict]], dict]:
    """The clustering vectors in the order the learner would get them, and the personas."""
    log = generate(users, events, seed)
    ucfg = UserConfig()
    parser, clock = EventParser(), PartitionWatermark(30.0)
    logics: dict[str, UserLogic] = {}
    stream: list[tuple[str, dict]] = []
    for line in log.lines:
        event = parser.parse(line)
        if not isinstance(event, Event):
            continue
        logic = logics.setdefault(event.key, UserLogic(ucfg))
        for update in logic.on_items([stamp_event(event, clock.observe(event.timestamp), "c:0")]):
            stream += [(update.user_id, i.cluster_x) for i in update.learn if i.cluster_x]
    for logic in logics.values():
        for update in logic.on_watermark(clock.watermark):
            stream += [(update.user_id, i.cluster_x) for i in update.learn if i.cluster_x]
    return stream, {u.user_id: u.persona for u in log.truth}


def candidates(k: int) -> dict[str, Any]:
    """Each clusterer behind a scaler, with settings sized for 4 groups and ~40k points."""
    def scaled(model: Any) -> Any:
        return preprocessing.StandardScaler() | model
    return {
        "KMeans (halflife 0.5, River default)": scaled(cluster.KMeans(n_clusters=k, seed=1)),
        "KMeans (halflife 0.01)": scaled(cluster.KMeans(n_clusters=k, halflife=0.01, seed=1)),
        "STREAMKMeans (chunk 200)": scaled(cluster.STREAMKMeans(chunk_size=200, n_clusters=k, seed=1)),
        "CluStream (50 micro, k macro)": scaled(cluster.CluStream(
            n_macro_clusters=k, max_micro_clusters=50, time_gap=2000, seed=1)),
        "DBSTREAM (threshold 1.5)": scaled(cluster.DBSTREAM(
            clustering_threshold=1.5, fading_factor=0.001, cleanup_interval=2000,
            intersection_factor=0.3, minimum_weight=1.0)),
        "DenStream (eps 1.0)": scaled(cluster.DenStream(
            decaying_factor=0.01, beta=0.5, mu=2.5, epsilon=1.0, n_samples_init=1000)),
    }


class _Ours:
    """segstream's ClusterModel with the predict/learn names of a River model."""

    def __init__(self) -> None:
        self.model = ClusterModel(ModelConfig())

    def predict_one(self, x: dict) -> int:
        found = self.model.predict(x)
        return -1 if found is None else found

    def learn_one(self, x: dict) -> None:
        self.model.learn(x)


def _predict(model: Any, x: dict) -> int:
    """Predict; -1 where a clusterer has no clusters yet (some raise before they have)."""
    try:
        found = model.predict_one(x)
    except (ValueError, KeyError, IndexError, ZeroDivisionError):
        return -1
    return -1 if found is None else int(found)


def evaluate(name: str, model: Any, stream: list[tuple[str, dict]], persona: dict) -> dict[str, Any]:
    started = time.perf_counter()
    halfway = None
    last: dict[str, dict] = {}
    for i, (user, x) in enumerate(stream):
        _predict(model, x)
        model.learn_one(x)
        last[user] = x
        if i == len(stream) // 2:
            halfway = copy.deepcopy(model)
    per_point = (time.perf_counter() - started) / len(stream) * 1e6
    labels = {user: _predict(model, x) for user, x in last.items()}
    users = [u for u in labels if u in persona]
    ari = adjusted_rand_index([labels[u] for u in users], [persona[u] for u in users])
    probe = [x for _, x in stream[-2000:]]
    assert halfway is not None
    stable = sum(_predict(halfway, x) == _predict(model, x) for x in probe) / len(probe)
    return {"clusterer": name, "ari": round(ari or 0.0, 3), "stable": round(stable, 3),
            "ids": len(set(labels.values())), "us_per_snapshot": round(per_point, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args(argv)
    stream, persona = snapshot_stream(args.users, args.events, args.seed)
    print(f"{len(stream)} snapshots of {len(persona)} users")
    rows = [evaluate(name, model, stream, persona) for name, model in candidates(args.k).items()]
    rows.append(evaluate("segstream ClusterModel (KMeans, seeded)", _Ours(), stream, persona))
    print(f"{'clusterer':<42} {'ARI':>6} {'stable':>7} {'ids':>4} {'µs/snapshot':>12}")
    for r in rows:
        print(f"{r['clusterer']:<42} {r['ari']:>6.3f} {r['stable']:>7.3f} {r['ids']:>4}"
              f" {r['us_per_snapshot']:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
