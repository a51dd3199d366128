"""The memory benchmark runs (small, no size target: those are in benchmarks/RESULTS.md)."""

from __future__ import annotations

from benchmarks.state_memory import flow_rss, snapshot_sizes


def test_snapshot_sizes_on_a_small_log() -> None:
    sizes = snapshot_sizes(300, events_per_user=5)
    assert sizes["users_sampled"] > 250
    assert 0 < sizes["p50"] <= sizes["p99"] <= sizes["max"]


def test_flow_rss_on_a_few_users() -> None:
    result = flow_rss(2000)
    assert result["events"] == 6000
    assert result["rss_peak_mib"] >= result["rss_before_mib"] > 0
    assert result["events_per_s"] > 0
