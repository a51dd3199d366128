"""The settings comparison runs on a tiny log (no speed assertion)."""

from __future__ import annotations

import pytest

from benchmarks.variants import main, parse_variant

pytestmark = pytest.mark.integration


def test_each_variant_runs_each_round_and_gets_a_median(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--events", "2000", "--users", "200", "--rounds", "2",
                 "SEGSTREAM_GC_THRESHOLD=0", "SEGSTREAM_GC_THRESHOLD=50000"]) == 0
    printed = capsys.readouterr().out.splitlines()
    runs = [line for line in printed if " round " in line]
    assert [line.split()[0] for line in runs] == ["SEGSTREAM_GC_THRESHOLD=0",
                                                  "SEGSTREAM_GC_THRESHOLD=50000"] * 2
    medians = printed[printed.index(next(x for x in printed if x.startswith("variant"))) + 1:]
    assert [line.split()[:2] for line in medians] == [["SEGSTREAM_GC_THRESHOLD=0", "2"],
                                                      ["SEGSTREAM_GC_THRESHOLD=50000", "2"]]


def test_a_variant_without_a_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_variant("A=1,B=x y") == {"A": "1", "B": "x y"}
    with pytest.raises(SystemExit):
        main(["SEGSTREAM_GC_THRESHOLD"])
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_recovery_variants_each_get_a_store_of_their_own(
        capsys: pytest.CaptureFixture[str]) -> None:
    # run_scenario raises if a run asked for recovery wrote none.
    assert main(["--events", "2000", "--users", "200", "--rounds", "1", "--recovery",
                 "SEGSTREAM_RECOVERY_PARTITIONS=2", "SEGSTREAM_RECOVERY_PARTITIONS=4"]) == 0
    runs = [line for line in capsys.readouterr().out.splitlines() if " round " in line]
    assert len(runs) == 2
