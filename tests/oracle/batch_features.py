"""An independent batch recomputation of the per-user features of ``docs/features.md``.

The streaming code keeps bucketed counters, running sums, settled/pending state
and event-time timers. This module keeps none of that: it groups a whole log by
user, sorts each user's events into the timeline ``(timestamp, messageId)`` and
computes every feature straight from its definition, by plain loops over that
list. Clarity comes before speed, and it stays independent of what it
checks: it never imports
``segstream.operators.features``, ``.windows``, ``.user`` or ``segstream.state``.

Assumptions: every event is valid (the caller dropped malformed lines) and on
time, so ``late_total`` is 0 and the timeline is the whole sorted log.

>>> log = [
...     {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "a",
...      "timestamp": "2024-01-01T00:00:00Z"},
...     {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "b",
...      "timestamp": "2024-01-01T00:10:00Z", "properties": {"revenue": 20}},
... ]
>>> user = recompute(log)["u1"]
>>> user["sessions_total"], user["purchases_total"], user["revenue_total"], user["journey"]
(1, 1, 20.0, 'decision')
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segstream.operators.parse import parse_timestamp
from segstream.operators.taxonomy import DEFAULT_TAXONOMY

WINDOW_ROLES = ("product_view", "search", "add_to_cart", "checkout", "purchase")
RESOLUTIONS = (60, 300, 3600, 86400)
DAY = 86400
DEFAULT_WEIGHTS = {
    "product_view": 1.0, "search": 1.0, "add_to_cart": 3.0, "checkout": 5.0,
    "purchase": 10.0, "signup": 2.0, "page_view": 1.0,
}
TRAIT_STRING_LIMIT = 200
IDLE_S = 14 * DAY
"""The journey's inactivity transition in ``tests/oracle/segments.toml``."""


def parse_horizon(text: str) -> tuple[int, int]:
    """Return ``(seconds, resolution)`` of a horizon such as ``"1h"``.

    The resolution is the largest of 60, 300, 3600, 86400 s that divides the
    horizon a whole number of times, at least 7.

    >>> parse_horizon("1h"), parse_horizon("24h"), parse_horizon("7d"), parse_horizon("30d")
    ((3600, 300), (86400, 3600), (604800, 86400), (2592000, 86400))
    """
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None:
        raise ValueError(f"not a horizon: {text!r}")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    for resolution in sorted(RESOLUTIONS, reverse=True):
        if seconds % resolution == 0 and seconds // resolution >= 7:
            return seconds, resolution
    raise ValueError(f"horizon {text!r} has no resolution that divides it at least 7 times")


def in_window(t: float, now: float, seconds: int, resolution: int) -> bool:
    """Whether an event at ``t`` counts in the window of ``seconds`` at time ``now``."""
    bucket_now = math.floor(now / resolution)
    bucket = math.floor(t / resolution)
    return bucket_now - seconds // resolution < bucket <= bucket_now


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _user_key(doc: Mapping[str, Any]) -> str:
    for field in ("userId", "anonymousId"):
        value = doc.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # the parser accepts integer ids as their decimal text
        if isinstance(value, str) and value:
            return value
    raise ValueError(f"event without userId or anonymousId: {doc!r}")


def _normalize(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields the features read, from one Segment-Spec object."""
    call_type = doc.get("type")
    if call_type is None and doc.get("event") is not None:
        call_type = "track"
    name = doc.get("event")
    if call_type in ("page", "screen"):
        name = doc.get("name", name)
    t = parse_timestamp(doc["timestamp"])
    if t is None:
        raise ValueError(f"bad timestamp: {doc['timestamp']!r}")
    properties = _dict(doc.get("properties"))
    if _number(properties.get("revenue")):
        revenue = float(properties["revenue"])
    elif _number(properties.get("total")):
        revenue = float(properties["total"])
    else:
        revenue = 0.0
    context = _dict(doc.get("context"))
    traits = _dict(doc.get("traits"))
    if not traits:
        traits = _dict(context.get("traits"))
    message_id = doc.get("messageId")
    return {
        "type": call_type,
        "role": DEFAULT_TAXONOMY.role_of(str(call_type), name),
        "t": t,
        "message_id": message_id if isinstance(message_id, str) else "",
        "revenue": revenue,
        "device": _text(_dict(context.get("device")).get("type")),
        "country": _text(_dict(context.get("location")).get("country")),
        "channel": _text(_dict(context.get("campaign")).get("source")),
        "traits": traits,
    }


def recompute(
    events: Iterable[dict[str, Any]],
    *,
    session_gap_s: float = 1800.0,
    window_horizons: Sequence[str] = ("1h", "24h", "7d", "30d"),
    engagement_half_life_s: float = 7 * 86400.0,
    engagement_weights: Mapping[str, float] | None = None,
    required_attributes: Sequence[str] = ("email", "country"),
    max_traits: int = 32,
    cart_views: int = 5,
    cart_views_within_s: float = 600.0,
    cart_no_purchase_for_s: float = 86400.0,
    final_watermarks: Mapping[str, float] | float | None = None,
) -> dict[str, dict[str, object]]:
    """Recompute every user's final features from a whole log of valid, on-time events.

    Args:
        events: Segment-Spec objects, in any order.
        session_gap_s: a gap larger than this starts a new session.
        window_horizons: horizons of the ``{role}_{h}`` counts.
        engagement_half_life_s: half-life of an event's engagement weight.
        engagement_weights: role -> weight, overriding the defaults.
        required_attributes: names ``completeness`` looks for.
        max_traits: most trait keys kept.
        cart_views: product views needed to arm the cart trigger.
        cart_views_within_s: how far before the add those views may be.
        cart_no_purchase_for_s: deadline after the add.
        final_watermarks: the watermark at the end of the stream, one for all
            users or per user key; ``None``: no timer has fired.

    Returns:
        user key -> feature name -> value.

    """
    horizons = [(name, *parse_horizon(name)) for name in window_horizons]
    weights = dict(DEFAULT_WEIGHTS)
    weights.update(engagement_weights or {})

    by_user: dict[str, list[dict[str, Any]]] = {}
    for doc in events:
        by_user.setdefault(_user_key(doc), []).append(_normalize(doc))

    result: dict[str, dict[str, object]] = {}
    for key, timeline in by_user.items():
        timeline.sort(key=lambda e: (e["t"], e["message_id"]))
        if final_watermarks is None:
            watermark = -math.inf
        elif isinstance(final_watermarks, Mapping):
            watermark = final_watermarks.get(key, -math.inf)
        else:
            watermark = float(final_watermarks)
        result[key] = _features(
            timeline, watermark, session_gap_s=session_gap_s, horizons=horizons,
            half_life=engagement_half_life_s, weights=weights, required=required_attributes,
            max_traits=max_traits, cart_views=cart_views, cart_within=cart_views_within_s,
            cart_for=cart_no_purchase_for_s,
        )
    return result


def _features(
    timeline: list[dict[str, Any]], watermark: float, *, session_gap_s: float,
    horizons: list[tuple[str, int, int]], half_life: float, weights: dict[str, float],
    required: Sequence[str], max_traits: int, cart_views: int, cart_within: float, cart_for: float,
) -> dict[str, object]:
    times = [e["t"] for e in timeline]
    now = max(times)  # T = last_seen
    out: dict[str, object] = {}

    # Counts and sessions.
    out["events_total"] = len(timeline)
    out["late_total"] = 0
    out["first_seen"] = float(min(times))
    out["last_seen"] = float(now)
    sessions: list[list[float]] = []  # each session's event times
    for i, t in enumerate(times):
        if i == 0 or t - times[i - 1] > session_gap_s:
            sessions.append([])
        sessions[-1].append(t)
    out["sessions_total"] = len(sessions)
    out["session_events"] = len(sessions[-1])
    out["session_length_s"] = float(now - sessions[-1][0])
    out["events_per_session"] = len(timeline) / len(sessions)
    out["bounce_rate"] = sum(1 for s in sessions if len(s) == 1) / len(sessions)

    # Session starts per horizon.
    for name, seconds, resolution in horizons:
        out[f"sessions_{name}"] = sum(1 for s in sessions if in_window(s[0], now, seconds, resolution))

    # Rolling role counts.
    for role in WINDOW_ROLES:
        for name, seconds, resolution in horizons:
            out[f"{role}_{name}"] = sum(
                1 for e in timeline if e["role"] == role and in_window(e["t"], now, seconds, resolution)
            )

    # Purchases: totals, frequency and monetary value over 30 and 90 days.
    purchases = [e for e in timeline if e["role"] == "purchase"]
    out["purchases_total"] = len(purchases)
    out["revenue_total"] = float(sum(e["revenue"] for e in purchases))
    for days in (30, 90):
        inside = [e for e in purchases if in_window(e["t"], now, days * DAY, DAY)]
        out[f"purchases_{days}d"] = len(inside)
        out[f"revenue_{days}d"] = float(sum(e["revenue"] for e in inside))
        if days == 90:
            out["aov_90d"] = float(sum(e["revenue"] for e in inside)) / len(inside) if inside else 0.0
    last_purchase = max((e["t"] for e in purchases), default=None)
    out["last_purchase"] = None if last_purchase is None else float(last_purchase)
    out["since_last_purchase_s"] = None if last_purchase is None else float(now - last_purchase)
    out["since_last_seen_s"] = 0.0
    out["age_s"] = float(now - min(times))

    # Engagement: a direct sum of decayed weights.
    total = 0.0
    for e in timeline:
        if e["role"] is not None:
            w = weights.get(e["role"], 1.0)
        elif e["type"] in ("identify", "alias"):
            w = 0.0
        else:
            w = 1.0
        total += w * 2 ** (-(now - e["t"]) / half_life)
    out["engagement"] = total

    # Context: latest device and country, earliest channel.
    devices = [e["device"] for e in timeline if e["device"] is not None]
    countries = [e["country"] for e in timeline if e["country"] is not None]
    channels = [e["channel"] for e in timeline if e["channel"] is not None]
    out["device"] = devices[-1] if devices else None
    out["country"] = countries[-1] if countries else None
    out["channel"] = channels[0] if channels else None

    # Traits, merged in timeline order.
    traits: dict[str, object] = {}
    for e in timeline:
        for name, value in e["traits"].items():
            if not isinstance(value, str | int | float | bool):  # None, objects, lists
                continue
            if isinstance(value, str):
                value = value[:TRAIT_STRING_LIMIT]
            if name in traits or len(traits) < max_traits:
                traits[name] = value
    out["traits"] = traits

    # Completeness.
    present = 0
    for name in required:
        if name in traits or (name in ("device", "country", "channel") and out[name] is not None):
            present += 1
    completeness = present / len(required) if required else 1.0
    out["completeness"] = completeness

    # Cart-abandonment trigger and journey, walking the timeline.
    deadline: float | None = None  # armed
    member = False
    fired = 0
    phase = "awareness"
    purchases_so_far = 0
    for i, e in enumerate(timeline):
        t = e["t"]
        if deadline is not None and deadline < t and watermark > deadline:
            deadline, member, fired = None, True, fired + 1
        if e["role"] == "purchase":
            deadline = None  # cancel
            member = False  # leave
        if e["role"] == "add_to_cart" and deadline is None and not member:
            views = 0
            for j in range(i, -1, -1):  # this event and those before it in the timeline
                before = timeline[j]
                if before["t"] < t - cart_within:
                    break
                if before["role"] == "product_view":
                    views += 1
            if views >= cart_views:
                deadline = t + cart_for
        if e["role"] == "purchase":
            purchases_so_far += 1
        # The journey of tests/oracle/segments.toml, in plain code.
        if i > 0 and phase != "churn_risk" and t > timeline[i - 1]["t"] + IDLE_S:
            phase = "churn_risk"
        role = e["role"]
        if phase == "churn_risk" and i > 0:
            phase = "win_back"
        elif phase == "awareness" and role in ("product_view", "search", "add_to_cart"):
            phase = "consideration"
        elif phase in ("awareness", "consideration", "win_back") and role in ("checkout", "purchase"):
            phase = "decision"
        elif phase in ("decision", "win_back") and role == "purchase" and purchases_so_far >= 2:
            phase = "retention"
    if phase != "churn_risk" and watermark > timeline[-1]["t"] + IDLE_S:
        phase = "churn_risk"
    if deadline is not None and watermark > deadline:
        deadline, member, fired = None, True, fired + 1
    out["cart_abandoned_total"] = fired
    out["cart_abandoned"] = member
    out["journey"] = phase
    segments = []
    if member:
        segments.append("cart_abandoner")
    if completeness < 1:
        segments.append("needs_enrichment")
    out["segments"] = sorted(segments)
    return out


ORACLE_SEGMENTS = Path(__file__).with_name("segments.toml")
"""The segments file this module's journey and rule segments follow."""
