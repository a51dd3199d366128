"""UserState: versioned, serializable, small; Profile.copy is independent."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.errors import StateError
from segstream.state.profile import NO_WATERMARK, Fact, Profile, UserState

times = st.floats(0, 4e9)
names = st.none() | st.text(max_size=12)
facts = st.builds(
    Fact, ts=times, message_id=st.text(max_size=20), role=names,
    revenue=st.floats(0, 1e6), call=st.sampled_from(["track", "page", "identify"]),
    device=names, country=names, channel=names,
    traits=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1),
                                       max_size=3),
)
buckets = st.lists(st.lists(st.tuples(st.integers(0, 10**6), *[st.integers(0, 99)] * 5,
                                      st.floats(0, 1e6)).map(list), max_size=4),
                   min_size=3, max_size=3)
profiles = st.builds(
    Profile, events_total=st.integers(0, 10**9), first_seen=st.none() | times,
    last_seen=st.none() | times, revenue_total=st.floats(0, 1e9), buckets=buckets,
    engagement=st.floats(0, 1e6), device=names,
    traits=st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.booleans(), max_size=4),
    recent_views=st.lists(times, max_size=5), cart_deadline=st.none() | times,
    cart_member=st.booleans(), journey=st.none() | st.sampled_from(["awareness", "decision"]),
)
states = st.builds(
    UserState, user_id=st.text(min_size=1, max_size=20), version=st.integers(0, 2**53),
    published_journey=st.none() | st.sampled_from(["awareness", "decision"]),
    published_segments=st.lists(st.sampled_from(["cart_abandoner", "needs_enrichment"]),
                                unique=True).map(sorted),
    watermark=st.just(NO_WATERMARK) | times, clock=st.text(max_size=10),
    pending=st.lists(facts, max_size=3), settled=profiles,
)


@settings(max_examples=50)
@given(states)
def test_bytes_round_trip(state: UserState) -> None:
    """to_bytes/from_bytes restores an equal state (the snapshot is the state)."""
    assert UserState.from_bytes(state.to_bytes()) == state


@settings(max_examples=50)
@given(states)
def test_pickle_round_trip(state: UserState) -> None:
    """States pickle (Bytewax may pickle what it snapshots)."""
    assert pickle.loads(pickle.dumps(state)) == state


@given(profiles)
def test_copy_is_equal_and_independent(profile: Profile) -> None:
    """Changing a copy's buckets, traits or views leaves the original untouched."""
    clone = profile.copy()
    assert clone == profile
    clone.traits["new"] = "x"
    clone.recent_views.append(1.0)
    for level in clone.buckets:
        for bucket in level:
            bucket[1] += 1
    assert "new" not in profile.traits
    assert clone != profile or not any(profile.buckets)


def test_new_user_snapshot_is_small() -> None:
    """An empty state is tens of bytes; the size budget per active user is in benchmarks/."""
    assert len(UserState("user-0000123456").to_bytes()) < 200


@pytest.mark.parametrize("data", [b"", b"not json", b"[99, 1]", b'[2, "u"]', b"{}"])
def test_unreadable_snapshot_raises_state_error(data: bytes) -> None:
    """A snapshot from another format is refused with an actionable message."""
    with pytest.raises(StateError, match="delete the recovery directory|not readable"):
        UserState.from_bytes(data)


def test_snapshot_bytes_hold_no_spare_buffer() -> None:
    """The bytes a user is kept as cost their length, not orjson's 4 KiB output buffer."""
    state = UserState("u1")
    tracemalloc.start()
    try:
        kept = [state.to_bytes() for _ in range(100)]
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 100 * (len(kept[0]) + 200)


def test_a_format_5_snapshot_resumes_without_last_active() -> None:
    """A recovery directory written before last_active existed resumes: the user's profile is
    the same, with no late event newer than last_seen."""
    import orjson  # noqa: PLC0415

    state = UserState("u1", version=7, settled=Profile(events_total=3, first_seen=1.0, last_seen=9.0))
    values = orjson.loads(state.to_bytes())
    index = 1 + 10 + [f for f in Profile.__dataclass_fields__].index("last_active")
    del values[index]  # the layout of format 5
    values[0] = 5
    resumed = UserState.from_bytes(orjson.dumps(values))
    assert resumed == state
    values[0] = 4
    with pytest.raises(StateError, match="delete the recovery directory"):
        UserState.from_bytes(orjson.dumps(values))
