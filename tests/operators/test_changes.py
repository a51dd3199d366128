"""Output serialization: change messages follow the published JSON Schema."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import orjson
from hypothesis import given
from hypothesis import strategies as st

from segstream.operators.changes import (
    MAX_DETAIL_CHARS,
    change_key,
    change_value,
    dead_letter_headers,
    dead_letter_parts,
)
from segstream.operators.events import Change, Reason, Rejected

SCHEMA = json.loads(resources.files("segstream").joinpath("schemas/segment-change.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

changes = st.builds(
    Change,
    user_id=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(["journey", "cluster", "rule", "churn"]),
    segment=st.text(min_size=1, max_size=20),
    change=st.sampled_from(["enter", "exit"]),
    previous=st.none() | st.text(min_size=1, max_size=10),
    event_time=st.floats(0, 4e9),
    version=st.integers(1, 2**40),
    cause=st.text(max_size=20),
    rule=st.none() | st.text(max_size=20),
    scores=st.none() | st.dictionaries(st.text(max_size=5), st.floats(0, 1), max_size=3),
    model_version=st.none() | st.integers(0, 1000),
)


def test_schema_is_valid() -> None:
    """The shipped schema is itself a valid JSON Schema."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@given(changes, st.floats(0, 4e9))
def test_every_change_matches_the_schema(change: Change, emitted_at: float) -> None:
    """Whatever the change, its JSON value validates against the schema."""
    doc = orjson.loads(change_value(change, emitted_at=emitted_at))
    VALIDATOR.validate(doc)
    assert doc["version"] == change.version and doc["user_id"] == change.user_id
    assert change_key(change) == change.user_id.encode()


def test_schema_rejects_a_missing_version() -> None:
    """The schema is strict enough to catch a message without version."""
    doc = orjson.loads(change_value(Change("u", "journey", "journey:a", "enter", None, 0.0, 1, "m"),
                                    emitted_at=0.0))
    del doc["version"]
    assert not VALIDATOR.is_valid(doc)


class TestDeadLetterParts:
    """A dead letter keeps the original bytes when they fit, and its first bytes when not."""

    @staticmethod
    def rejected(key: bytes | None, value: bytes | None, detail: str = "d") -> Rejected:
        return Rejected(Reason.OVERSIZED, detail, value, key, "clicks", 0, 7)

    def test_what_fits_is_kept_byte_for_byte(self) -> None:
        """Key and value within the budget: unchanged, no size headers."""
        key, value, headers = dead_letter_parts(self.rejected(b"k" * 24, b"v" * 1000), max_bytes=1024)
        assert (key, value) == (b"k" * 24, b"v" * 1000)
        assert [name for name, _ in headers] == ["segstream.reason", "segstream.detail",
                                                 "segstream.source"]

    @given(st.integers(0, 5000), st.integers(0, 5000), st.booleans(), st.integers(1024, 4096))
    def test_the_cut_fits_and_says_what_was_cut(self, key_size: int, value_size: int, null: bool,
                                                budget: int) -> None:
        """Whatever the sizes, key plus value fit the budget, are prefixes of the originals, and a
        header gives each cut part's original length."""
        original_key, original_value = b"k" * key_size, None if null else b"v" * value_size
        key, value, headers = dead_letter_parts(self.rejected(original_key, original_value),
                                                max_bytes=budget)
        assert len(key or b"") + len(value or b"") <= budget
        assert original_key.startswith(key or b"")
        assert (value is None) == null and (original_value or b"").startswith(value or b"")
        found = dict(headers)
        assert (found.get("segstream.key_bytes") == str(key_size).encode()) == (key != original_key)
        assert (found.get("segstream.value_bytes") == str(value_size).encode()) == (
            value != original_value)

    def test_a_long_detail_is_cut(self) -> None:
        """A detail quoting a huge wrong value stays a sentence, not a copy of the value."""
        detail = dict(dead_letter_headers(self.rejected(None, b"x", "got " + "[1, " * 10000)))
        assert len(detail["segstream.detail"]) == MAX_DETAIL_CHARS + 3
