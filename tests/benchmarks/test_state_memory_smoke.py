"""The memory benchmark runs (small, no size target: those are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

from benchmarks.state_memory import (
    baseline_rss,
    flow_rss,
    main,
    python_side,
    snapshot_sizes,
    synthetic_docs,
)

USERS = 2000


def test_snapshot_sizes_on_a_small_log() -> None:
    sizes = snapshot_sizes(USERS, events_per_user=5)
    assert sizes["users_measured"] > USERS * 0.9
    assert not sizes["sampled"]
    assert 0 < sizes["p50"] <= sizes["p95"] <= sizes["p99"] <= sizes["max"]
    assert 0 < sizes["settled"]["mean"] <= sizes["settled"]["max"]


def test_synthetic_users_are_distinct_and_in_time_order() -> None:
    docs = [json.loads(doc) for doc in synthetic_docs(50)]
    assert len(docs) == 150
    assert len({doc["userId"] for doc in docs}) == 50
    stamps = [doc["timestamp"] for doc in docs]
    assert stamps == sorted(stamps)


def test_flow_and_baseline_rss_on_a_few_users() -> None:
    # 2,000 users hold about a megabyte: RSS may end a little below where it
    # started (freed start-up memory), so only plausibility is checked here.
    flow = flow_rss(USERS)
    assert flow["events"] == 3 * USERS
    assert flow["rss_start_mib"] > 0 and flow["rss_end_mib"] > 0
    assert flow["rss_end_mib"] - flow["rss_start_mib"] < 100
    assert flow["rss_samples"] > 0 and flow["events_per_s"] > 0
    base = baseline_rss(USERS)
    assert base["rss_start_mib"] > 0 and base["rss_end_mib"] > 0
    assert base["rss_end_mib"] - base["rss_start_mib"] < 100


def test_python_side_adds_up() -> None:
    side = python_side(500)
    assert side["state_bytes_object"] > side["state_bytes_len"] > 0
    assert side["total"] > side["state_bytes_object"] + side["user_step"]


def test_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--users", str(USERS), "--events-per-user", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"target_bytes_per_user", "events_per_user", "machine", "sizes"} <= report.keys()
    [size] = report["sizes"]
    assert size["users"] == USERS
    assert {"snapshot_bytes", "rss", "baseline_rss", "python_side", "breakdown",
            "rss_per_user_within_target"} <= size.keys()
    assert size["snapshot_bytes"]["mean"] > 0 and size["rss"]["bytes_per_user"] > 0
    assert {"state_bytes", "python_objects", "bytewax_per_key", "rest"} <= size["breakdown"].keys()
