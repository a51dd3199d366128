"""The taxonomy maps any log's event names to roles, by configuration alone."""

from __future__ import annotations

import pickle

import pytest

from segstream.errors import ConfigError
from segstream.operators.taxonomy import DEFAULT_TAXONOMY, ROLES, Taxonomy


def test_default_names_are_segment_ecommerce() -> None:
    """The default taxonomy knows the Segment e-commerce spec names."""
    expected = {
        "Product Viewed": "product_view", "Products Searched": "search",
        "Product Added": "add_to_cart", "Checkout Started": "checkout",
        "Order Completed": "purchase", "Signed Up": "signup", "Page Viewed": "page_view",
    }
    assert {name: DEFAULT_TAXONOMY.role_of("track", name) for name in expected} == expected


def test_custom_names_replace_nothing_else() -> None:
    """A log with its own names (product_view, cart, purchase) works by config."""
    taxonomy = Taxonomy.build({"product_view": ["product_view"], "add_to_cart": ["cart"],
                               "purchase": ["purchase"]})
    assert taxonomy.role_of("track", "cart") == "add_to_cart"
    assert taxonomy.role_of("track", "Order Completed") is None


def test_matching_ignores_case_and_spacing() -> None:
    """Names match case-insensitively with white space folded."""
    assert DEFAULT_TAXONOMY.role_of("track", "order   COMPLETED ") == "purchase"


def test_screen_and_page_are_page_views() -> None:
    """page and screen calls are page views whatever their name."""
    assert DEFAULT_TAXONOMY.role_of("screen", None) == "page_view"
    assert DEFAULT_TAXONOMY.role_of("identify", None) is None


def test_unknown_role_fails() -> None:
    """A role that does not exist is a config error naming it."""
    with pytest.raises(ConfigError, match="taxonomy.buy"):
        Taxonomy.build({"buy": ["x"]})


def test_one_name_two_roles_fails() -> None:
    """An event name cannot play two roles."""
    with pytest.raises(ConfigError, match="already mapped"):
        Taxonomy.build({"purchase": ["Done"], "checkout": ["done"]})


def test_pickle_round_trip() -> None:
    """Taxonomies pickle (Bytewax ships config to workers)."""
    again = pickle.loads(pickle.dumps(DEFAULT_TAXONOMY))
    assert again == DEFAULT_TAXONOMY
    assert all(again.role_of("track", n) == r for r, names in again.roles.items() for n in names)
    assert set(DEFAULT_TAXONOMY.roles) == set(ROLES)
