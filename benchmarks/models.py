"""How good and how costly the online models are, on generated data with known personas.

    python -m benchmarks.models                       # 2,000 users, 100,000 events, seeds 1-3
    python -m benchmarks.models --users 5000 --events 250000 --seeds 1 --json

Each run generates a log (``segstream generate``: four planted personas, the
churners stop for good), drives every event through the real per-user logic
in log order with real watermarks, and feeds what the users emit (feature
snapshots, delayed churn labels) to one :class:`~segstream.operators.models.Models`
right away, as the learner step does, then settles every user at the final
watermark. It reports:

- **ARI**: adjusted Rand index of each user's published cluster against their
  persona (users still ``unassigned`` excluded: they have not had a snapshot
  since warm-up);
- **churn ROC-AUC**: over every labelled session-end snapshot that had a
  published probability, the probability as published before its label was
  known (progressive validation), against the label;
- **id stability**: the models are copied half-way; at the end both copies
  assign the same 2,000 late snapshots, and the share given the same id
  (the clusters kept their ids while the same distribution flowed);
- **cost**: microseconds per learn (a snapshot, or a label) and per predict,
  measured on the models alone, and the snapshot rate one process sustains
  for the models' part (``1e6 / (learn + predict)``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import Counter
from math import comb
from typing import Any

from segstream.operators.event_time import PartitionWatermark
from segstream.operators.events import Event
from segstream.operators.features import stamp_event
from segstream.operators.models import LearnItem, ModelConfig, ModelHub, Models
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic
from segstream.state.profile import UserState

from segstream.tools.generate import generate

CLOCK = "clickstream:0"
STABILITY_SAMPLE = 2000
STABLE_FROM = 0.75


def adjusted_rand_index(labels: list[Any], truth: list[Any]) -> float | None:
    """Adjusted Rand index of two labellings of the same items (1 = identical partitions).

    ``None`` for fewer than two items.

    >>> adjusted_rand_index([0, 0, 1, 1], ["a", "a", "b", "b"])
    1.0
    >>> round(adjusted_rand_index([0, 1, 0, 1], ["a", "a", "b", "b"]), 2)
    -0.5
    """
    pairs = comb(len(labels), 2)
    if not pairs:
        return None
    together = sum(comb(n, 2) for n in Counter(zip(labels, truth, strict=True)).values())
    rows = sum(comb(n, 2) for n in Counter(labels).values())
    cols = sum(comb(n, 2) for n in Counter(truth).values())
    expected = rows * cols / pairs
    top = (rows + cols) / 2
    return 1.0 if top == expected else (together - expected) / (top - expected)


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve (ties count half); ``None`` without both outcomes.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    ranked = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid_rank = (i + j + 1) / 2  # 1-based average rank of the tie group
        rank_sum += mid_rank * sum(1 for _, label in ranked[i:j] if label)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def run(users: int, events: int, seed: int, config: ModelConfig | None = None) -> dict[str, Any]:
    """One generated log through the user logic and the models; the quality figures."""
    config = ModelConfig() if config is None else config
    log = generate(users, events, seed)
    hub = ModelHub(config)
    hub.install(Models(config))
    ucfg = UserConfig(models=config, hub=hub)
    parser, clock = EventParser(), PartitionWatermark(30.0)
    logics: dict[str, UserLogic] = {}
    labelled: list[tuple[float, bool]] = []
    late_snapshots: list[dict[str, float]] = []
    halfway: Models | None = None
    learned = 0
    started = time.perf_counter()

    def learn(items: tuple[LearnItem, ...]) -> None:
        nonlocal learned
        for item in items:
            if item.churned is not None and item.predicted is not None:
                labelled.append((item.predicted, item.churned))
            if item.cluster_x is not None and halfway is not None:
                late_snapshots.append(item.cluster_x)
            hub.learn([item])
            learned += 1

    for i, line in enumerate(log.lines):
        event = parser.parse(line)
        if not isinstance(event, Event):
            continue
        logic = logics.get(event.key)
        if logic is None:
            logic = logics[event.key] = UserLogic(ucfg)
        for update in logic.on_items([stamp_event(event, clock.observe(event.timestamp), CLOCK)]):
            learn(update.learn)
        if halfway is None and i >= len(log.lines) * STABLE_FROM:
            halfway = copy.deepcopy(hub.models)
    for logic in logics.values():
        for update in logic.on_watermark(clock.watermark):
            learn(update.learn)
    seconds = time.perf_counter() - started

    models = hub.models
    assert models is not None and halfway is not None
    persona = {user.user_id: user.persona for user in log.truth}
    assigned = []
    for key, logic in logics.items():
        cluster = None if logic.data is None else UserState.from_bytes(logic.data).settled.cluster
        if cluster not in (None, "unassigned"):
            assigned.append((cluster, persona[key]))
    sample = late_snapshots[-STABILITY_SAMPLE:]
    same = sum(halfway.cluster.predict(x) == models.cluster.predict(x) for x in sample)
    return {
        "users": users, "events": events, "seed": seed,
        "ari": _round(adjusted_rand_index([c for c, _ in assigned], [p for _, p in assigned])),
        "users_assigned": len(assigned), "users_in_state": len(logics),
        "churn_roc_auc": _round(roc_auc([p for p, _ in labelled], [y for _, y in labelled])),
        "labels_scored": len(labelled), "labels_churned": sum(y for _, y in labelled),
        "id_stability": _round(same / len(sample) if sample else None),
        "stability_sample": len(sample),
        "model_version": models.version, "learned": learned,
        "clusters": models.summary()["clusters"],
        "seconds": round(seconds, 1), **cost(models, sample),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def cost(models: Models, sample: list[dict[str, float]], rounds: int = 2000) -> dict[str, float]:
    """Microseconds per learn and per predict on a copy of ``models`` (the models alone)."""
    work = copy.deepcopy(models)
    sample = sample or [{"search_share": 0.1, "purchase_share": 0.0, "commerce_share": 0.5,
                         "events_per_session": 1.5, "order_value": 0.0, "bounce_rate": 0.0}]
    xs = (sample * (rounds // len(sample) + 1))[:rounds]
    churn_xs = [dict(x, mobile=0.0, tenure_days=1.0, sessions=1.0, events=2.0, purchases_90d=0.0,
                     engagement=1.0, product_view_share=0.5, add_to_cart_share=0.1) for x in xs]
    started = time.perf_counter()
    for x, cx in zip(xs, churn_xs, strict=True):
        work.predict(x, cx)
    predict_us = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for x in xs:
        work.learn(LearnItem(cluster_x=x))
    snapshot_us = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for i, cx in enumerate(churn_xs):
        work.learn(LearnItem(churn_x=cx, churned=i % 3 == 0, predicted=0.3))
    label_us = (time.perf_counter() - started) / rounds * 1e6
    return {"predict_us": round(predict_us, 1), "learn_snapshot_us": round(snapshot_us, 1),
            "learn_label_us": round(label_us, 1),
            "snapshots_per_s": round(1e6 / (predict_us + snapshot_us))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    runs = [run(args.users, args.events, seed) for seed in args.seeds]
    if args.json:
        print(json.dumps({"runs": runs}))
        return 0
    print(f"{'seed':>4} {'ARI':>6} {'AUC':>6} {'stable':>7} {'labels':>7} {'version':>7} "
          f"{'predict':>8} {'learn':>7} {'label':>7} {'snap/s':>7} {'secs':>5}")
    def fmt(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

    for r in runs:
        print(f"{r['seed']:>4} {fmt(r['ari'], 6)} {fmt(r['churn_roc_auc'], 6)} {fmt(r['id_stability'], 7)}"
              f" {r['labels_scored']:>7} {r['model_version']:>7} {r['predict_us']:>7.1f}µ"
              f" {r['learn_snapshot_us']:>6.1f}µ {r['learn_label_us']:>6.1f}µ"
              f" {r['snapshots_per_s']:>7} {r['seconds']:>5}")
    def median(name: str) -> float | None:
        values = [r[name] for r in runs if r[name] is not None]
        return statistics.median(values) if values else None

    print("median ARI", median("ari"), "AUC", median("churn_roc_auc"),
          "stability", median("id_stability"))
    for r in runs[:1]:
        for cid, text in sorted(r["clusters"].items()):
            print(f"cluster {cid}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
