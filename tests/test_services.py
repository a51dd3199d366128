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
