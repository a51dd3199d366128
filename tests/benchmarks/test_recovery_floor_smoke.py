"""The recovery-store floor benchmark runs on a few keys (no speed assertion)."""

from __future__ import annotations

import json

from benchmarks.recovery_floor import main, measure_epoch_write, measure_resume, report


def test_resume_builds_every_key_from_its_snapshot() -> None:
    # The second run's source resumes at its end and reads nothing: every key
    # built there comes from its snapshot (fewer raises).
    row = measure_resume(keys=3000, files=4)
    assert (row["keys"], row["files"]) == (3000, 4)
    assert row["resume_s"] > 0
    assert row["resume_us_per_key"] > 0


def test_epoch_write_is_measured_against_recovery_off() -> None:
    row = measure_epoch_write(files=2)
    assert row["epochs"] == 200
    assert isinstance(row["ms_per_epoch"], float)


def test_the_table_has_a_row_per_file_count(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--keys", "2000", "--files", "1", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["files"] for row in rows] == [1, 2]
    assert all(row["keys"] == 2000 and row["resume_s"] > 0 for row in rows)
    lines = report(rows).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| 2,000 | 1 |")
