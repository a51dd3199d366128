"""Issue 5's acceptance figures on generated data, through the real per-user logic.

2,000 users and 100,000 events (``segstream generate``, seed 1: four planted
personas, churners stop for good), every event through ``UserLogic`` with real
watermarks, every snapshot and label into the models as the learner step gets
them. Deterministic (seeded generator, seeded clusterer), so the figures do not
wander; ``python -m benchmarks.models`` reports them for more seeds and sizes.
"""

from __future__ import annotations

import pytest

from benchmarks.models import adjusted_rand_index, main, roc_auc, run


@pytest.fixture(scope="module")
def figures() -> dict:
    return run(2000, 100_000, seed=1)


def test_clusters_find_the_personas(figures: dict) -> None:
    assert figures["users_assigned"] >= 0.95 * figures["users_in_state"]
    assert figures["ari"] >= 0.6, figures


def test_churn_is_ranked_before_its_label_is_known(figures: dict) -> None:
    assert figures["labels_scored"] > 1000 and 0 < figures["labels_churned"] < figures["labels_scored"]
    assert figures["churn_roc_auc"] >= 0.8, figures


def test_cluster_ids_are_stable_after_warm_up(figures: dict) -> None:
    assert figures["stability_sample"] == 2000
    assert figures["id_stability"] >= 0.95, figures


def test_cost_is_measured(figures: dict) -> None:
    assert figures["predict_us"] > 0 and figures["learn_snapshot_us"] > 0
    assert figures["snapshots_per_s"] > 0


def test_metric_helpers() -> None:
    assert adjusted_rand_index([1, 1, 2, 2], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.2, 0.9], [False, True]) == 1.0
    assert roc_auc([0.5, 0.5], [False, True]) == 0.5


def test_report_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--users", "200", "--events", "4000", "--seeds", "1"]) == 0
    assert "median ARI" in capsys.readouterr().out


def test_clusterer_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.clusterer_comparison import main as compare  # noqa: PLC0415

    assert compare(["--users", "150", "--events", "3000"]) == 0
    out = capsys.readouterr().out
    assert "segstream ClusterModel" in out and "DenStream" in out
