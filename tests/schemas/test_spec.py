"""The Segment Spec as `prepare_event` applies it: what is stored, what is refused and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.segment import (
    SUPPORTED_TYPES,
    EventRejected,
    canonical_keys,
    derive_message_id,
    prepare_event,
)
from schemas.trait_keys import MAX_TRAIT_KEYS
from tests.conftest import fixture_names, load_fixture

RECEIVED = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)


def rejected(event: Any, **kwargs: Any) -> EventRejected:
    with pytest.raises(EventRejected) as raised:
        prepare_event(event, RECEIVED, **kwargs)
    return raised.value


@pytest.mark.parametrize("name", fixture_names())
def test_every_segment_fixture_prepares_with_its_own_message_id(name: str) -> None:
    payload = load_fixture(name)
    prepared = prepare_event(load_fixture(name), RECEIVED)
    assert (prepared.type, prepared.message_id) == (payload["type"], payload["messageId"])
    assert prepared.raw == payload


def test_columns_come_from_the_event() -> None:
    page = prepare_event({"type": "page", "anonymousId": "a1", "properties": {"name": "Home"}}, RECEIVED)
    assert (page.event_name, page.anonymous_id, page.user_id, page.event_time) == (
        "Home",
        "a1",
        None,
        RECEIVED,
    )
    group = prepare_event({"type": "group", "userId": 7, "groupId": 8}, RECEIVED)
    assert (group.user_id, group.group_id, group.previous_id) == ("7", "8", None)
    alias = prepare_event({"type": "alias", "userId": "u", "previousId": 1.0}, RECEIVED)
    assert alias.previous_id == "1"


def test_group_id_and_previous_id_are_read_only_on_their_own_types() -> None:
    track = prepare_event(
        {"type": "track", "userId": "u", "event": "e", "groupId": "g", "previousId": "p"}, RECEIVED
    )
    assert (track.group_id, track.previous_id) == (None, None)
    assert track.raw["groupId"] == "g"


def test_write_key_is_not_kept_in_the_stored_event() -> None:
    prepared = prepare_event({"type": "page", "userId": "u", "writeKey": "tlk_secret"}, RECEIVED)
    assert "writeKey" not in prepared.raw


def test_a_body_of_another_type_is_refused_by_a_route_naming_the_route_to_use() -> None:
    # Issue 22 reversed the old rule (the route's type overwrote the body's).
    with pytest.raises(EventRejected) as refused:
        prepare_event({"type": "page", "userId": "u", "event": "e"}, RECEIVED, forced_type="track")
    assert refused.value.status == 400 and "/v1/page" in refused.value.message
    prepared = prepare_event({"userId": "u", "event": "e"}, RECEIVED, forced_type="track")
    assert prepared.type == prepared.raw["type"] == "track"


def test_keys_are_recased_only_at_the_top_and_the_canonical_spelling_wins() -> None:
    event = {"USERID": "loser", "userId": "u1", "Properties": {"MessageId": 1}, "custom_Key": 2}
    assert canonical_keys(event) == {"userId": "u1", "properties": {"MessageId": 1}, "custom_Key": 2}


@pytest.mark.parametrize(
    ("event", "status", "code", "field"),
    [
        ([], 400, "invalid_event", None),
        ({"userId": "u"}, 400, "invalid_event", "type"),
        ({"type": ["track"], "userId": "u"}, 400, "invalid_event", "type"),
        ({"type": "purchase", "userId": "u"}, 501, "unsupported_type", "type"),
        ({"type": "x" * 10_000, "userId": "u"}, 501, "unsupported_type", "type"),
        ({"type": "track", "userId": "u"}, 400, "invalid_event", "event"),
        ({"type": "delete", "anonymousId": "a"}, 400, "invalid_event", "userId"),
    ],
)
def test_refusals_carry_status_code_and_the_field(
    event: Any, status: int, code: str, field: str | None
) -> None:
    error = rejected(event)
    assert (error.status, error.code) == (status, code)
    if field:
        assert field in error.errors and field in error.message
    assert len(error.message) < 500  # Segment's debugger shows it: short, whatever was sent


def test_unsupported_type_message_lists_every_supported_type() -> None:
    message = rejected({"type": "purchase", "userId": "u"}).message
    assert all(kind in message for kind in SUPPORTED_TYPES)


def test_derived_message_id_ignores_what_a_resend_changes() -> None:
    event = {"type": "track", "userId": "u", "event": "e", "properties": {"a": 1, "b": 2}, "timestamp": "t"}
    base = derive_message_id(event)
    assert derive_message_id({**event, "sentAt": "x", "receivedAt": "y", "writeKey": "k"}) == base
    assert derive_message_id({**event, "messageId": None}) == base
    assert derive_message_id({**event, "properties": {"b": 2, "a": 1}}) == base  # key order
    assert derive_message_id({**event, "properties": {"a": 1, "b": 3}}) != base
    assert base.startswith("derived-") and len(base) <= 100


def test_numbers_and_strings_of_one_id_derive_one_message_id() -> None:
    sent = "2024-03-04T09:00:00Z"
    as_number = prepare_event({"type": "identify", "userId": 42, "sentAt": sent}, RECEIVED)
    as_string = prepare_event({"type": "identify", "userId": "42", "sentAt": sent}, RECEIVED)
    assert as_number.message_id == as_string.message_id
    assert as_number.raw["userId"] == "42"


json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
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
            ]
        )
        | st.text(max_size=5),
        json_values,
        max_size=8,
    ),
    kind=st.sampled_from([*SUPPORTED_TYPES, None]),
)
def test_any_object_is_prepared_or_refused_with_a_status_never_another_error(
    fields: dict[str, Any], kind: str | None
) -> None:
    try:
        prepared = prepare_event(fields, RECEIVED, forced_type=kind)
    except EventRejected as error:
        assert error.status in (400, 413, 501) and error.message
        return
    assert prepared.type in SUPPORTED_TYPES
    assert 0 < len(prepared.message_id) <= 100
    assert prepared.event_time.tzinfo is not None
    assert prepared.raw["messageId"] == prepared.message_id


# -- the trait-key bound (issue 20): what one event may make the fold write ---------------


def _wide(count: int) -> dict[str, int]:
    return {f"trait_{n}": n for n in range(count)}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "identify", "userId": "u", "traits": _wide(MAX_TRAIT_KEYS + 1)}, "traits"),
        ({"type": "group", "userId": "u", "groupId": "g", "traits": _wide(MAX_TRAIT_KEYS + 1)}, "traits"),
        (
            {"type": "track", "userId": "u", "event": "e", "context": {"traits": _wide(MAX_TRAIT_KEYS + 1)}},
            "context.traits",
        ),
        # The two together are what the fold writes for one event.
        (
            {
                "type": "identify",
                "userId": "u",
                "traits": _wide(MAX_TRAIT_KEYS // 2 + 1),
                "context": {"traits": {f"c{n}": n for n in range(MAX_TRAIT_KEYS // 2)}},
            },
            "traits",
        ),
    ],
)
def test_an_event_over_the_trait_key_bound_is_refused_saying_what_to_fix(
    event: dict[str, Any], field: str
) -> None:
    error = rejected(event)
    assert (error.status, error.code) == (400, "invalid_event")
    assert field in error.errors
    assert f"at most {MAX_TRAIT_KEYS} trait keys" in error.message
    assert f"has {MAX_TRAIT_KEYS + 1}" in error.message
    assert len(error.message) < 500


def test_an_event_at_the_trait_key_bound_is_stored() -> None:
    traits = _wide(MAX_TRAIT_KEYS)
    prepared = prepare_event({"type": "identify", "userId": "u", "traits": traits}, RECEIVED)
    assert prepared.raw["traits"] == traits
    assert 300 <= MAX_TRAIT_KEYS <= 1_000  # the references' range (docs/ingest.md)


def test_derived_message_id_tells_sends_apart_by_sent_at_when_the_event_has_no_time() -> None:
    event = {"type": "track", "userId": "M2", "event": "Logged In"}
    monday, tuesday = ({**event, "sentAt": day} for day in ("2024-03-04T09:00:00Z", "2024-03-05T09:00:00Z"))
    assert derive_message_id(monday) != derive_message_id(tuesday)
    assert derive_message_id(monday) == derive_message_id(dict(monday))  # an unchanged re-send
    assert derive_message_id(event, sent_at="2024-03-04T09:00:00Z") == derive_message_id(monday)
    # Nothing tells two sends apart: a fresh id each time, as Segment's Tracking API gives.
    assert derive_message_id(event) != derive_message_id(event)
    assert derive_message_id(monday, occurrence=1) != derive_message_id(monday)
