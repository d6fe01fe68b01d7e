"""The fast path of prepare_event (`quick_load`) never disagrees with the marshmallow schema.

Whatever it accepts, the schema accepts, with the same values for every field the schema
declares; whatever the schema refuses, it leaves to the schema (returns None).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from schemas.event_schemas import SCHEMAS
from schemas.quick_load import quick_load
from schemas.segment import SUPPORTED_TYPES, canonical_keys
from tests.conftest import fixture_names, load_fixture

FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "groupId",
    "previousId",
    "timestamp",
    "properties",
    "traits",
    "context",
    "integrations",
    "name",
    "category",
]


def agrees(event: dict[str, Any]) -> dict[str, Any] | None:
    """Check the fast path against the schema for one event; the fast result."""
    event = canonical_keys(dict(event))
    kind = event.get("type")
    assert isinstance(kind, str) and kind in SCHEMAS
    schema = SCHEMAS[kind]
    quick = quick_load(kind, event)
    try:
        full = schema.load(event)
    except ValidationError:
        assert quick is None, "the fast path accepted what the schema refuses"
        return None
    if quick is not None:
        declared = set(schema.fields)
        assert set(quick) <= declared
        for name in declared:
            assert quick.get(name) == full.get(name), name
            assert (name in quick) == (name in full and name in event), name
    return quick


@pytest.mark.parametrize("name", fixture_names())
def test_the_documented_payloads_take_the_fast_path_with_the_schemas_values(name: str) -> None:
    event = load_fixture(name)
    if event.get("type") not in SCHEMAS:
        pytest.skip("not an event type")
    assert agrees(event) is not None or _has_numeric_id(event)


def _has_numeric_id(event: dict[str, Any]) -> bool:
    return any(isinstance(event.get(k), int | float) for k in ("userId", "anonymousId", "messageId"))


@pytest.mark.parametrize(
    "event",
    [
        {"type": "track", "userId": "u", "event": "E"},
        {"type": "track", "userId": "u", "event": "  "},
        {"type": "track", "userId": "u"},
        {"type": "track", "userId": 5, "event": "E"},
        {"type": "track", "userId": "", "anonymousId": None, "event": "E"},
        {"type": "track", "anonymousId": "a", "event": "E", "timestamp": ""},
        {"type": "track", "anonymousId": "a", "event": "E", "timestamp": "nope"},
        {"type": "track", "anonymousId": "a", "event": "E", "timestamp": 1700000000},
        {"type": "track", "anonymousId": "a", "event": "E", "messageId": "m" * 101},
        {"type": "identify", "userId": "u", "traits": {"x" * 256: 1}},
        {"type": "identify", "userId": "u", "context": {"traits": {"x" * 256: 1}}},
        {"type": "identify", "userId": "u", "context": {"traits": "not an object"}},
        {"type": "identify", "userId": "u", "properties": []},
        {"type": "page", "userId": "u", "name": None, "category": 3},
        {"type": "screen", "userId": "u", "name": "Home", "properties": {"name": "p"}},
        {"type": "group", "userId": "u", "groupId": ""},
        {"type": "group", "userId": "u", "groupId": None},
        {"type": "group", "anonymousId": "a", "groupId": "g"},
        {"type": "alias", "previousId": "p", "anonymousId": "a"},
        {"type": "alias", "previousId": "p", "userId": "u"},
        {"type": "delete", "anonymousId": "a"},
        {"type": "delete", "userId": "u", "messageId": None},
        {"type": "track", "USERID": "u", "Event": "E"},
    ],
)
def test_edge_cases_agree(event: dict[str, Any]) -> None:
    agrees(event)


json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)
likely = {
    "userId": st.text(max_size=3) | json_scalars,
    "anonymousId": st.text(max_size=3) | st.none(),
    "event": st.text(max_size=3) | json_scalars,
    "groupId": st.text(max_size=3) | json_scalars,
    "previousId": st.text(max_size=3) | json_scalars,
    "timestamp": st.sampled_from(["2024-03-01T12:00:00Z", "", " ", "x", "2024-13-01"]) | json_scalars,
    "traits": st.dictionaries(st.text(max_size=3), json_scalars, max_size=2) | json_values,
    "context": st.fixed_dictionaries({}, optional={"traits": json_values}) | json_values,
}


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(SUPPORTED_TYPES),
    fields=st.dictionaries(st.sampled_from(FIELDS[1:]), json_values, max_size=6),
    picks=st.fixed_dictionaries({}, optional=likely),
)
def test_any_event_agrees(kind: str, fields: dict[str, Any], picks: dict[str, Any]) -> None:
    agrees({**fields, **picks, "type": kind})
