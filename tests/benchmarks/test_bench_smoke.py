"""`make bench` cannot rot: its whole path runs on a tiny log (no speed assertion)."""

from __future__ import annotations

import pytest

from benchmarks.bench import SCENARIOS, Result, main, run_bench, table

pytestmark = pytest.mark.integration


def test_every_scenario_runs_to_the_end_of_a_tiny_log() -> None:
    results, setting = run_bench(1500, 150, SCENARIOS, timeout_s=120)
    assert [r.scenario for r in results] == list(SCENARIOS)
    assert [r.processes for r in results] == [1, 1, 2, 1]
    assert all(r.events == results[0].events > 1000 and r.rate > 0 for r in results)
    text = table(results, setting)
    assert "Tansu" in text
    assert text.splitlines()[-4].split()[-1] == "1.00"  # the ceiling against itself


def test_the_table_puts_each_scenario_against_the_ceiling() -> None:
    text = table([Result("ceiling", 1, 1000, 1.0), Result("full", 1, 1000, 2.0)], {"broker": "Tansu"})
    assert text.splitlines()[-1].split() == ["full", "1", "2.0", "500", "0.50"]


def test_unknown_scenarios_are_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--scenarios", "ceiling,fast"])
    assert "unknown 'fast'; choose from ceiling, full, full_2p, baseline" in capsys.readouterr().err
