"""UserState: small, versioned, serializable and mergeable."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segstream.errors import StateError
from segstream.state.profile import UserState

states = st.builds(
    UserState,
    user_id=st.text(min_size=1, max_size=20),
    version=st.integers(0, 10**6),
    events_total=st.integers(0, 10**9),
    sessions_total=st.integers(0, 10**6),
    purchases_total=st.integers(0, 10**6),
    revenue_total=st.floats(-1e9, 1e9, allow_nan=False),
    first_seen=st.none() | st.floats(0, 4e9),
    last_seen=st.none() | st.floats(0, 4e9),
    journey=st.none() | st.sampled_from(["awareness", "decision"]),
)


@given(states)
def test_bytes_round_trip(state: UserState) -> None:
    """to_bytes/from_bytes restores an equal state."""
    assert UserState.from_bytes(state.to_bytes()) == state


@given(states)
def test_pickle_round_trip(state: UserState) -> None:
    """States pickle (Bytewax may pickle what it snapshots)."""
    assert pickle.loads(pickle.dumps(state)) == state


def test_snapshot_is_small() -> None:
    """A busy user's snapshot stays far below 1 KB."""
    state = UserState("user-0000123456", 42, 10**6, 5000, 300, 123456.78, 1.7e9, 1.71e9, "retention")
    assert len(state.to_bytes()) < 200


@pytest.mark.parametrize("data", [b"", b"not json", b"[99, 1]", b'[1, "u"]', b"{}"])
def test_unreadable_snapshot_raises_state_error(data: bytes) -> None:
    """A snapshot from another format is refused with an actionable message."""
    with pytest.raises(StateError):
        UserState.from_bytes(data)


def test_merge_adds_counters_and_widens_time() -> None:
    """Merging an anonymous history adds counters, widens first/last seen, keeps the phase."""
    known = UserState("u1", 3, 5, 2, 1, 10.0, 100.0, 200.0, "decision")
    anon = UserState("a1", 4, 2, 1, 1, 5.0, 50.0, 150.0, "consideration")
    known.merge(anon)
    assert known == UserState("u1", 4, 7, 3, 2, 15.0, 50.0, 200.0, "decision")
