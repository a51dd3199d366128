"""`make bench` cannot rot: its whole path runs on a tiny log (no speed assertion)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.bench import (
    SCENARIOS,
    Result,
    chart_directory,
    cpu_seconds,
    latency_table,
    main,
    results_section,
    run_bench,
    table,
    write_results,
)
from benchmarks.charts import write_charts
from benchmarks.latency import Percentiles, cpu_shares, redis_latencies

pytestmark = pytest.mark.integration


def test_every_scenario_runs_to_the_end_of_a_tiny_log() -> None:
    results, latency, setting = run_bench(6000, 600, SCENARIOS, timeout_s=120, latency_seconds=1.0,
                                          latency_loads=(0.05, 0.1))
    assert [r.scenario for r in results] == list(SCENARIOS)
    assert [r.processes for r in results] == [1, 1, 2, 2, 1]
    assert all(r.events == results[0].events > 1000 and r.rate > 0 for r in results)
    text = table(results, setting)
    assert "Tansu" in text
    assert text.splitlines()[-len(SCENARIOS)].split()[4] == "1.00"  # the ceiling against itself
    # Latency: a paced run per load, each change and each event observed on its way out.
    full = results[1].rate
    assert [run.rate for run in latency] == pytest.approx([0.05 * full, 0.1 * full])
    for run in latency:
        assert run.kafka.count > 0 and run.redis.count > 0
        # The bare broker at the same rate: every paced event arrives once.
        assert run.broker is not None and 0 < run.broker.count <= int(run.rate * 1.0)
        assert 0 < run.broker.p50 <= run.broker.max
        assert 0 < run.redis.p50 <= run.redis.p99 <= run.redis.max < 30_000
        # Every paced event is counted once in Redis (some may still be in flight at the end).
        assert run.redis.count <= int(run.rate * 1.0)
        # CPU sampled while pacing: the broker alone, then beside the worker.
        assert set(run.cpu) == {"broker alone", "broker", "worker"}
        assert all(0 <= share <= 1 for pair in run.cpu.values() for share in pair)
        assert run.cpu["worker"][1] > 0
    assert len(latency_table(latency).splitlines()) == 1 + 4 * len(latency)


def test_recovery_gives_each_segstream_run_a_store_of_its_own() -> None:
    # run_bench checks that each run wrote its recovery store, and raises if not.
    # Each shard of full_2s needs a directory of its own (a shared one fails at start-up).
    results, _latency, setting = run_bench(4000, 400, ["ceiling", "full", "full_2s"], timeout_s=120,
                                           recovery=True)
    assert setting["recovery"].startswith("on for segstream (16 files")
    assert [r.scenario for r in results] == ["ceiling", "full", "full_2s"]
    assert all(r.events > 1000 and r.rate > 0 for r in results)
    _results, _latency, setting = run_bench(2000, 200, ["ceiling"], timeout_s=120)
    assert setting["recovery"] == "off"


def test_cpu_shares_are_of_the_whole_machine_in_the_first_and_last_window() -> None:
    samples = [(0.0, 0.0), (1.0, 0.2), (5.0, 1.0), (8.0, 2.0), (9.0, 3.5), (13.0, 9.0)]
    first, last = cpu_shares(samples, window_s=5.0, cores=2)
    assert first == pytest.approx(1.0 / 5 / 2)
    assert last == pytest.approx((9.0 - 2.0) / (13.0 - 8.0) / 2)
    assert cpu_shares([(0.0, 1.0), (0.5, 1.5)], cores=1) == (1.0, 1.0)  # shorter than a window
    assert cpu_shares([(0.0, 1.0)], cores=1) == (0.0, 0.0)


def test_percentiles_are_nearest_rank_in_ms() -> None:
    p = Percentiles.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (p.count, p.p50, p.p95, p.p99, p.max) == (100, 50.0, 95.0, 99.0, 100.0)


def test_redis_latency_attributes_each_new_count_to_the_oldest_unseen_send() -> None:
    sends = {"u1": [10.0, 10.25, 10.5], "u2": [11.0]}
    receipts = [
        ("u1", 5, 10.5),   # warm-up counted 4: one new event, the first send
        ("u3", 9, 10.6),   # not paced in this run
        ("u1", 7, 11.0),   # two more at once
        ("u1", 7, 11.5),   # rewritten without a new event
        ("u2", 1, 12.0),
    ]
    assert redis_latencies(receipts, sends, {"u1": 4}) == [
        (10.0, 0.5), (10.25, 0.75), (10.5, 0.5), (11.0, 1.0)]


def test_the_table_puts_each_scenario_against_the_ceiling() -> None:
    text = table([Result("ceiling", 1, 1000, 1.0), Result("full", 1, 1000, 2.0)], {"broker": "Tansu"})
    assert text.splitlines()[-1].split() == ["full", "1", "2.0", "500", "0.50", "-", "-"]


def test_unknown_scenarios_are_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--scenarios", "ceiling,fast"])
    assert "unknown 'fast'; choose from ceiling, full, full_2p, full_2s, baseline" in capsys.readouterr().err


def test_one_command_prints_every_part_writes_json_and_draws_the_charts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make bench` on tiny sizes: medians of 2 runs, memory, resume, JSON, PNGs and RESULTS agree."""
    out = tmp_path / "bench.json"
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nHand-written analysis.\n")
    args = ["--events", "3000", "--users", "300", "--scenarios", "ceiling,full", "--runs", "2",
            "--latency-seconds", "0", "--memory-users", "1000", "--resume-users", "300",
            "--json", str(out), "--results", str(results)]  # charts: beside the results file
    main(args)
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    full = document["results"][1]
    assert len(full["runs"]) == 2 and full["seconds"] == statistics.median(full["runs"])
    assert f"{full['rate']:,.0f}" in printed and "median of 2" in printed
    [size] = document["memory"]
    assert size["users"] == 1000 and f"{size['rss']['bytes_per_user']}" in printed
    resume = document["resume"]
    assert resume["users_in_state_after_resume"] == 301  # every user back, plus the new one
    assert 0 < resume["resume_s"] < 60 and f"{resume['resume_s']}" in printed
    for name in ("throughput", "memory"):
        png = tmp_path / "charts" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"chart: {png}" in printed
    assert not (tmp_path / "charts" / "latency.png").exists()  # no latency runs, no chart
    assert json.loads((tmp_path / "charts" / "bench.json").read_text()) == document
    # RESULTS.md gets exactly the printed tables, the command and the charts;
    # the hand-written text stays.
    written = results.read_text()
    assert written.startswith("# Benchmark results\n\n<!-- bench:begin")
    assert "Hand-written analysis." in written
    start = written.index("```text\n") + len("```text\n")
    section = written[start:written.index("\n```", start)]
    tables = printed[:printed.index("chart: ")].rstrip("\n")
    assert section == tables
    assert f"`python -m benchmarks.bench {' '.join(args)}`" in written
    assert "![throughput](charts/throughput.png)" in written
    # A second run replaces the section rather than adding one.
    write_results(results, results_section("again", ["table"], [], results))
    again = results.read_text()
    assert again.count("<!-- bench:begin") == 1 and "`again`" in again
    assert "Hand-written analysis." in again and "```text\ntable\n```" in again


def test_charts_go_beside_the_results_file_and_a_run_without_one_draws_none(
        tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    assert chart_directory(None, str(results)) == tmp_path / "charts"
    assert chart_directory(tmp_path / "elsewhere", "") == tmp_path / "elsewhere"
    # A side run (`--results ''`) must not redraw the charts RESULTS.md links.
    assert chart_directory(None, "") is None


def test_the_latency_chart_draws_every_load(tmp_path: Path) -> None:
    run = {"rate": 100.0, "achieved": 99.0,
           "kafka": {"count": 5, "p50": 20.0, "p95": 30.0, "p99": 40.0, "max": 50.0},
           "redis": {"count": 5, "p50": 10.0, "p95": 20.0, "p99": 30.0, "max": 40.0}}
    [png] = write_charts({"latency": [run, {**run, "achieved": 199.0}]}, tmp_path)
    assert png.name == "latency.png" and png.stat().st_size > 10_000
    # With the bare broker's floor measured at each rate, it is drawn too.
    floor = {"count": 5, "p50": 5.0, "p95": 8.0, "p99": 9.0, "max": 12.0}
    [with_floor] = write_charts({"latency": [{**run, "broker": floor},
                                             {**run, "achieved": 199.0, "broker": floor}]},
                                tmp_path / "floor")
    assert with_floor.read_bytes() != png.read_bytes()


def test_cpu_seconds_count_the_services_and_the_waited_for_workers() -> None:
    """A service is read from /proc while it runs; a worker once it was waited for."""
    burn = "import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    service = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    try:
        before = cpu_seconds({"broker": service})
        subprocess.run([sys.executable, "-c", burn], check=True)  # a worker, waited for
        time.sleep(0.5)
        used = cpu_seconds({"broker": service}, before)
    finally:
        service.kill()
        service.wait()
    assert used["workers"] >= 0.3
    assert 0.2 <= used["broker"] + before["broker"] < 5.0
