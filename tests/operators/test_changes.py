"""Output serialization: change messages follow the published JSON Schema."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import orjson
from hypothesis import given
from hypothesis import strategies as st

from segstream.operators.changes import change_key, change_value
from segstream.operators.events import Change

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
