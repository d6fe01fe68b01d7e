"""For every body: never a 500, never half-stored (SPEC §2, §7).

Hypothesis throws arbitrary JSON at /v1/segment: any types and nesting, NUL characters
and lone surrogates, huge strings and numbers, odd unicode, Spec keys in any casing,
batches mixing good and bad events, gzip or not, UTF-8 valid or not. Whatever comes
back is a JSON answer with a status of the §2 table; a 200 has stored each accepted
event whole, anything else has stored nothing.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from app.ingest.body import make_storable
from schemas.segment import CANONICAL_KEYS
from tests.app.test_ingest import stored
from tests.conftest import TeamKeys

ODD_CHARACTERS = ["\x00", "\ud800", "\udfff", "\U0001f600", "\u202e", "\ufeff", "\uffff", "\u2028", "\\", '"']
SPEC_KEYS = sorted(CANONICAL_KEYS.values())
# Keys whose stored value may differ from the sent one: the route's type, ids as strings.
REWRITTEN = {"type", "messageId", "userId", "anonymousId", "groupId", "previousId"}
TYPES = ["identify", "track", "page", "screen", "group", "alias", "delete", "Track", "purchase", ""]

texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(ODD_CHARACTERS), max_size=20)
huge_text = st.builds(
    lambda piece, n: piece * n, st.sampled_from(["x", "é", "\x00", "\U0001f600"]), st.integers(0, 50_000)
)
numbers = (
    st.integers()
    | st.integers(0, 4000).map(lambda digits: 10**digits)  # up to 4,001 digits: json's limit is 4,300
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(texts | st.sampled_from(SPEC_KEYS), children, max_size=4)
    ),
    max_leaves=20,
)


def nested(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"k": value}
    return value


def recased(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key, key.lower(), key.upper(), key[0].upper() + key[1:]])


VALID = [
    {"type": "identify", "userId": "u1"},
    {"type": "track", "userId": "u1", "event": "Signed Up"},
    {"type": "page", "anonymousId": "a1"},
    {"type": "screen", "userId": 42},
    {"type": "group", "userId": "u1", "groupId": "g1"},
    {"type": "alias", "userId": "u1", "previousId": "p1"},
    {"type": "delete", "userId": "u1"},
]
plausible = {
    "type": st.sampled_from(TYPES),
    "userId": st.sampled_from(["u1", "", "0"]) | numbers | texts,
    "anonymousId": st.sampled_from(["a1", ""]) | texts,
    "messageId": st.sampled_from(["m1", "m2", ""]) | texts,
    "event": st.sampled_from(["Signed Up", ""]) | texts,
    "groupId": st.sampled_from(["g1", ""]) | numbers,
    "previousId": st.sampled_from(["p1"]) | numbers,
    "timestamp": st.sampled_from(["2024-03-01T12:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", ""])
    | texts
    | numbers,
    "originalTimestamp": st.sampled_from(["2020-05-09 23:54:49.209808489 +0000 UTC m=+70366.29"]) | texts,
    "properties": st.dictionaries(texts, json_values | huge_text, max_size=5)
    | st.builds(nested, st.integers(0, 120)),
    "traits": st.dictionaries(texts, json_values, max_size=3),
    "context": st.dictionaries(st.sampled_from(["ip", "library", "traits"]) | texts, json_values, max_size=3),
    "integrations": st.none() | st.dictionaries(texts, st.booleans(), max_size=2),
}


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some Spec keys set to plausible or arbitrary values, keys in any casing."""
    made: dict[str, Any] = dict(draw(st.sampled_from(VALID)))
    for key in draw(st.lists(st.sampled_from(sorted(plausible)), unique=True, max_size=4)):
        made[key] = draw(plausible[key]) if draw(st.integers(0, 3)) else draw(json_values)
    made = {draw(recased(key)): value for key, value in made.items()}
    made.update(draw(st.dictionaries(texts, json_values, max_size=2)))
    return made


bodies = (
    event_like()
    | json_values
    | st.fixed_dictionaries(
        {"batch": st.lists(event_like() | json_values, max_size=6)},
        optional={"context": json_values, "integrations": json_values, "Batch": json_values},
    )
)


def is_batch(body: Any) -> bool:
    return isinstance(body, dict) and any(key.lower() == "batch" for key in body)


def shape(value: Any) -> Any:
    """A value as JSONB gives it back: numbers may change form (1e308 becomes an integer)."""
    if isinstance(value, dict):
        return {key: shape(child) for key, child in value.items()}
    if isinstance(value, list):
        return [shape(child) for child in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return value


def assert_stored_whole(sent: dict[str, Any], raw: dict[str, Any]) -> None:
    """Every key sent is in the stored event, and (where not re-cased or re-typed) its value too."""
    stored_as = {key: make_storable(key) for key in sent}
    clashes = Counter(name.lower() for name in stored_as.values())
    for key, value in sent.items():
        name = stored_as[key]
        canonical = CANONICAL_KEYS.get(name.lower(), name)
        if canonical == "writeKey":
            continue
        assert canonical in raw, key
        if name == canonical and clashes[name.lower()] == 1 and canonical not in REWRITTEN:
            assert shape(raw[name]) == shape(make_storable(value)), key


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,  # each example empties the team's events first
    ],
)
@given(body=bodies, ascii_only=st.booleans(), gzipped=st.booleans())
def test_any_json_gets_a_clear_answer_never_a_500_and_is_stored_whole_or_not_at_all(
    app: Flask, engine: Engine, team: TeamKeys, body: Any, ascii_only: bool, gzipped: bool
) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM events WHERE team_id = :t"), {"t": team.id})
    # ensure_ascii=False with a lone surrogate makes invalid UTF-8: a case of its own.
    data = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    headers = {**team.basic(team.ingest), "Content-Type": "text/plain"}
    if gzipped:
        data = gzip.compress(data, compresslevel=1)
        headers["Content-Encoding"] = "gzip"

    response = app.test_client().post("/v1/segment", data=data, headers=headers)

    assert response.status_code in (200, 400, 413, 501), response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    answer = response.get_json()
    rows = stored(engine, team.id)
    event(f"status {response.status_code}{' batch' if is_batch(body) else ''}")
    if response.status_code != 200:
        assert answer["message"] and answer["code"]
        assert response.status_code != 400 or answer["errors"]  # a 400 names what is wrong
        assert rows == []
    elif is_batch(body):
        items = [value for key, value in body.items() if key.lower() == "batch"][-1]  # as a dict keeps it
        assert answer["accepted"] + answer["duplicates"] + len(answer["rejected"]) == len(items)
        assert len(rows) == answer["accepted"]
        assert all(0 <= r["index"] < len(items) and r["errors"] for r in answer["rejected"])
    else:
        assert answer == {"success": True}
        [row] = rows
        assert_stored_whole(body, row.raw)
        assert row.raw["messageId"] == row.message_id
