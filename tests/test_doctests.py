"""Every docstring example in the package runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["segstream", "segstream.flows", "segstream.operators", "segstream.state",
            "segstream.tools"]
MODULES = sorted(
    {*PACKAGES}
    | {
        f"{package}.{info.name}"
        for package in PACKAGES
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
        if not info.ispkg
    }
)


def test_namespaces_are_installed() -> None:
    """flows, operators and state install under the segstream namespace."""
    assert {"segstream.flows.segmentation", "segstream.operators.parse",
            "segstream.state.profile"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    """The module's doctests pass."""
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
