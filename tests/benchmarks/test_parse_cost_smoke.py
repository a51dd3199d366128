"""benchmarks.parse_cost runs and prints its figure (no speed is asserted)."""

from __future__ import annotations

import sys

import pytest

from benchmarks.parse_cost import main, parse_cost


def test_the_parse_cost_is_measured_and_printed(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_cost(300, 1) > 0
    monkeypatch.setattr(sys, "argv", ["parse_cost", "--events", "300", "--runs", "1"])
    main()
    assert "µs per message (300 generated lines, best of 1)" in capsys.readouterr().out
