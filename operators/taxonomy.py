"""Event taxonomy: map event names of any log to the semantic roles segstream reasons with.

Logs name things differently (``Order Completed``, ``purchase``,
``checkout_success``); rules and the journey speak only of roles. The mapping is
configuration (the ``[taxonomy]`` table), matched case-insensitively and with
surrounding white space ignored. ``page`` and ``screen`` calls are
``page_view`` whatever their name.

>>> taxonomy = Taxonomy.build({"purchase": ["purchase", "Order Completed"]})
>>> taxonomy.role_of("track", "  ORDER completed")
'purchase'
>>> taxonomy.role_of("track", "Something Else") is None
True
>>> taxonomy.role_of("page", "Home")
'page_view'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from segstream.errors import ConfigError

ROLES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "checkout",
    "purchase",
    "signup",
)
"""The semantic roles, in rough funnel order."""

_VIEW_TYPES = frozenset({"page", "screen"})


def _normalize(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """An immutable event-name -> role mapping.

    Attributes:
        roles: role -> the event names that play it, as configured.

    """

    roles: Mapping[str, tuple[str, ...]]
    _by_name: Mapping[str, str] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def build(
        cls, roles: Mapping[str, Iterable[str]], *, source: str = "taxonomy"
    ) -> Taxonomy:
        """Check and index a role -> names mapping.

        Raises:
            ConfigError: an unknown role, or one event name given two roles.

        """
        by_name: dict[str, str] = {}
        clean: dict[str, tuple[str, ...]] = {}
        for role, names in roles.items():
            if role not in ROLES:
                raise ConfigError(f"taxonomy.{role}", source, f"unknown role; roles: {ROLES}")
            clean[role] = tuple(names)
            for name in clean[role]:
                key = _normalize(name)
                other = by_name.get(key)
                if other is not None and other != role:
                    raise ConfigError(
                        f"taxonomy.{role}", source,
                        f"event name {name!r} is already mapped to role {other!r}",
                    )
                by_name[key] = role
        return cls(roles=clean, _by_name=by_name)

    def role_of(self, event_type: str, name: str | None) -> str | None:
        """Return the role of an event, or ``None`` if it plays none."""
        if event_type in _VIEW_TYPES:
            return "page_view"
        if name is None:
            return None
        return self._by_name.get(_normalize(name))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Rebuild the index on unpickle rather than shipping it twice.
        return (_rebuild, (dict(self.roles),))


def _rebuild(roles: dict[str, tuple[str, ...]]) -> Taxonomy:
    return Taxonomy.build(roles)


DEFAULT_TAXONOMY = Taxonomy.build(
    {
        "page_view": ("Page Viewed",),
        "product_view": ("Product Viewed", "Product List Viewed", "Product Clicked"),
        "search": ("Products Searched", "Product Searched"),
        "add_to_cart": ("Product Added",),
        "checkout": ("Checkout Started",),
        "purchase": ("Order Completed",),
        "signup": ("Signed Up",),
    }
)
"""Segment e-commerce spec names."""
