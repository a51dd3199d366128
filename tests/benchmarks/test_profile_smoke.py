"""The profile of the flow runs on a tiny log and reads its stages right (no speed assertion)."""

from __future__ import annotations

import cProfile
import pstats
import time

import pytest

from benchmarks.profile import STAGES, main, stage_table


def _inner() -> None:
    time.sleep(0.02)  # cProfile's default timer is the wall clock


def _outer() -> None:
    _inner()
    _inner()


def _never() -> None:
    pass


def test_a_stage_is_its_function_s_time_with_what_it_calls() -> None:
    profiler = cProfile.Profile()
    profiler.runcall(_outer)
    stats = pstats.Stats(profiler)
    outer, inner, never = stage_table(stats, [("outer", _outer), ("inner", _inner),
                                              ("never", _never)])
    assert (outer.calls, inner.calls, never.calls) == (1, 2, 0)
    assert 0.04 <= inner.seconds <= outer.seconds <= stats.total_tt  # type: ignore[attr-defined]
    assert outer.share > 0.9 and never.share == 0.0


def test_the_profile_lists_every_stage_and_the_hot_spots(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--events", "2000", "--users", "200", "--top", "5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("stage"))
    rows = printed[header + 1:header + 1 + len(STAGES)]
    assert [row[:58].rstrip() for row in rows] == [label for label, _ in STAGES]
    calls = {row[:58].strip(): int(row[58:68]) for row in rows}
    assert calls["parse (a batch of messages into facts)"] > 0
    assert calls["an event applied (to the view, then when it settles)"] >= 2000 - 200
    assert calls["the rules' conditions"] >= calls["an event or timer: the rules decided"] > 0
    functions = printed[printed.index(next(x for x in printed if x.startswith("function"))) + 1:]
    assert len(functions) == 5
