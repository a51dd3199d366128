"""operators/ and state/ pass mypy --strict under their installed names."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

REPO = Path(__file__).resolve().parent.parent


def test_operators_and_state_are_strictly_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mypy --strict finds no issue in segstream.operators and segstream.state.

    The folders install under `segstream.*` through setuptools' package-dir
    mapping, which mypy cannot follow, so the test lays out the package as it
    installs with symlinks and checks that tree.
    """
    package = tmp_path / "segstream"
    package.mkdir()
    for source in (REPO / "segstream").glob("*.py"):
        (package / source.name).symlink_to(source)
    (package / "py.typed").touch()
    for folder in ("flows", "operators", "state"):
        (package / folder).symlink_to(REPO / folder)
    monkeypatch.chdir(tmp_path)  # mypy finds packages from the working directory
    stdout, stderr, status = api.run([
        "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy_cache"),
        "-p", "segstream.operators", "-p", "segstream.state",
        "--config-file", "",
    ])
    assert status == 0, stdout + stderr
