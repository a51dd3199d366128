"""Choosing free ports for the services and workers the tests and tools start."""

from __future__ import annotations

import contextlib
import socket

import pytest

from segstream.errors import ServiceError
from segstream.services import free_ports


def bind_all(ports: list[int]) -> None:
    with contextlib.ExitStack() as held:
        for port in ports:
            held.enter_context(socket.socket()).bind(("127.0.0.1", port))


@pytest.mark.parametrize("count", [1, 2, 5])
def test_ports_are_distinct_and_free_together(count: int) -> None:
    ports = free_ports(count)
    assert len(set(ports)) == count
    bind_all(ports)


@pytest.mark.parametrize("count", [2, 4])
def test_consecutive_ports_form_a_run_that_is_free(count: int) -> None:
    ports = free_ports(count, consecutive=True)
    assert ports == list(range(ports[0], ports[0] + count))
    bind_all(ports)


def test_an_impossible_run_raises_service_error() -> None:
    with pytest.raises(ServiceError, match="70000 consecutive free TCP ports"):
        free_ports(70000, consecutive=True)


@pytest.mark.parametrize(("ci", "outcome", "code"), [("true", "error", 1), ("", "skipped", 0)])
def test_a_service_that_cannot_start_fails_the_run_under_ci(tmp_path: object, ci: str, outcome: str,
                                                            code: int) -> None:
    """Scenario: redis-server is not on PATH. We expect its tests to fail under CI=true (a
    missing service must not pass CI by skipping) and to be skipped on a developer's machine."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's tools, no redis-server
    if ci:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-rfs",
         "tests/state/test_redis.py::test_key_layout"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stdout[-2000:]
    assert f"1 {outcome}" in done.stdout
    assert "redis-server not found" in done.stdout
