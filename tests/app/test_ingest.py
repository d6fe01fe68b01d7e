"""The destination URL and the Tracking API routes: what Segment posts, what it gets back (SPEC §2).

Routes, keys, batches, the Spec's validation and every status code of the §2 table.
Body handling (encodings, sizes, odd text) is in test_ingest_body.py; outages and the
rate limit in test_ingest_faults.py; arbitrary input in test_ingest_properties.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys, fixture_names, load_fixture

T0 = "2024-03-01T12:00:00Z"
SPEC_TYPES = ["identify", "track", "page", "screen", "group", "alias", "delete"]
TRACKING_ROUTES = ["identify", "track", "page", "screen", "group", "alias"]


def stored(engine: Engine, team_id: int) -> list[Any]:
    """The team's events as stored, oldest first."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT message_id, type, event_name, user_id, anonymous_id, group_id, previous_id,"
                    " event_time, raw FROM events WHERE team_id = :t ORDER BY id"
                ),
                {"t": team_id},
            ).all()
        )


def post(client: FlaskClient, body: Any, headers: dict[str, str], path: str = "/v1/segment") -> Any:
    return client.post(path, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"})


def track(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": message_id, **extra}


def feed_types(client: FlaskClient, team: TeamKeys, user_id: str) -> list[str]:
    """The types in a customer's feed, oldest first, as an agent reads it."""
    read = team.bearer(team.read)
    found = client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=read)
    assert found.status_code == 200, found.get_json()
    feed = client.get(f"/api/v1/customers/{found.get_json()['id']}/feed?order=asc&limit=200", headers=read)
    return [item["type"] for item in feed.get_json()["data"]]


# --- what Segment sends: the documented samples, on every route ---------------------------


@pytest.mark.parametrize("name", fixture_names())
def test_every_segment_fixture_is_accepted(
    client: FlaskClient, team: TeamKeys, engine: Engine, name: str
) -> None:
    payload = load_fixture(name)
    response = post(client, payload, team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"success": True}
    assert response.headers["Content-Type"] == "application/json"
    rows = stored(engine, team.id)
    assert [(r.message_id, r.type) for r in rows] == [(payload["messageId"], payload["type"])]
    assert rows[0].raw == payload  # stored as received, unknown keys included


def test_fixture_count_is_what_segment_documents() -> None:
    assert len(fixture_names()) == 7


@pytest.mark.parametrize("kind", TRACKING_ROUTES)
def test_tracking_api_route_stores_the_event_with_the_routes_type(
    client: FlaskClient, team: TeamKeys, engine: Engine, kind: str
) -> None:
    name = next(n for n in fixture_names() if n.startswith(kind))
    payload = load_fixture(name)
    del payload["type"]  # the Tracking API takes the type from the route
    response = post(client, payload, team.basic(team.ingest), f"/v1/{kind}")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"success": True}
    [row] = stored(engine, team.id)
    assert (row.type, row.message_id) == (kind, payload["messageId"])
    assert row.raw["type"] == kind


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
def test_a_route_given_a_body_of_another_type_answers_400_naming_the_route_to_use(
    client: FlaskClient, team: TeamKeys, engine: Engine, path: str
) -> None:
    # Issue 22 reverses the old rule (the route's type overwrote the body's): a misrouted
    # identify stored as a track became a second event once sent again to the right route.
    body = {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "m1"}
    response = post(client, body, team.basic(team.ingest), path)
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["code"] == "invalid_event" and "/v1/identify" in answer["message"]
    assert "type" in answer["errors"]
    assert stored(engine, team.id) == []
    assert post(client, body, team.basic(team.ingest), "/v1/identify").status_code == 200
    assert [r.type for r in stored(engine, team.id)] == ["identify"]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/segment"])
def test_batch_routes_store_every_event_and_count_them(
    client: FlaskClient, team: TeamKeys, engine: Engine, path: str
) -> None:
    batch = [load_fixture(name) for name in fixture_names()]
    response = post(client, {"batch": batch}, team.basic(team.ingest), path)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "success": True,
        "accepted": 7,
        "duplicates": 0,
        "expired": 0,
        "rejected": [],
    }
    rows = stored(engine, team.id)
    assert sorted((r.type, r.message_id) for r in rows) == sorted((e["type"], e["messageId"]) for e in batch)


def test_resent_batch_is_answered_200_and_counted_as_duplicates(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    body = {"batch": [track("m1"), track("m2")]}
    post(client, body, team.basic(team.ingest), "/v1/batch")
    again = post(
        client, {"batch": [track("m1"), track("m2"), track("m3"), track("m3")]}, team.basic(team.ingest)
    )
    assert again.status_code == 200
    assert again.get_json()["accepted"] == 1
    assert again.get_json()["duplicates"] == 3
    assert sorted(r.message_id for r in stored(engine, team.id)) == ["m1", "m2", "m3"]


def test_batch_context_and_integrations_merge_into_each_event_the_events_own_keys_win(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    body = {
        "batch": [
            track("m1"),
            track("m2", context={"ip": "10.0.0.2", "locale": "fr-FR"}, integrations={"All": True}),
            track("m3", Context=None),
        ],
        "context": {"ip": "10.0.0.1", "library": {"name": "analytics-python", "version": "2.4.0"}},
        "integrations": {"All": False},
    }
    response = post(client, body, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 200, response.get_json()
    raw = {r.message_id: r.raw for r in stored(engine, team.id)}
    library = {"name": "analytics-python", "version": "2.4.0"}
    assert raw["m1"]["context"] == {"ip": "10.0.0.1", "library": library}
    assert raw["m1"]["integrations"] == {"All": False}
    assert raw["m2"]["context"] == {"ip": "10.0.0.2", "library": library, "locale": "fr-FR"}
    assert raw["m2"]["integrations"] == {"All": True}
    assert raw["m3"]["context"] == {"ip": "10.0.0.1", "library": library}


def test_batch_with_some_invalid_events_stores_the_valid_ones_and_lists_the_rejected(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    batch = [
        track("ok-1"),
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        "not an event",
        {"type": "purchase", "userId": "u1", "messageId": "bad-type"},
        track("ok-2"),
    ]
    response = post(client, {"batch": batch}, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["success"], body["accepted"], body["duplicates"]) == (True, 2, 0)
    assert [(r["index"], r["messageId"]) for r in body["rejected"]] == [
        (1, "no-event"),
        (2, None),
        (3, "bad-type"),
    ]
    assert "event" in body["rejected"][0]["errors"]
    assert "type" in body["rejected"][2]["errors"]
    assert all(r["message"] for r in body["rejected"])
    assert sorted(r.message_id for r in stored(engine, team.id)) == ["ok-1", "ok-2"]


def test_batch_whose_every_event_is_invalid_is_400_and_stores_nothing(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    batch = [{"type": "track", "userId": "u1"}, {"type": "group", "userId": "u1"}]
    response = post(client, {"batch": batch}, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_batch"
    assert "Every event" in body["message"] and "event" in body["message"]
    assert set(body["errors"]) == {"0", "1"}
    assert "groupId" in body["errors"]["1"]
    assert stored(engine, team.id) == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"batch": []}, "empty"),
        ({"batch": {"type": "track"}}, "must be"),
        (track("m1"), "must be"),
    ],
)
def test_malformed_batch_is_400_with_what_to_send(
    client: FlaskClient, team: TeamKeys, engine: Engine, body: Any, fragment: str
) -> None:
    response = post(client, body, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_batch"
    assert fragment in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_batch_of_more_than_2500_events_is_413(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    small = {"type": "page", "userId": "u"}
    response = post(client, {"batch": [small] * 2501}, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 413
    assert response.get_json()["code"] == "batch_too_large"
    assert "2500" in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_batch_of_exactly_2500_events_is_stored(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    batch = [{"type": "page", "userId": "u", "messageId": f"m{n}"} for n in range(2500)]
    response = post(client, {"batch": batch}, team.basic(team.ingest), "/v1/batch")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 2500
    assert len(stored(engine, team.id)) == 2500


# --- keys: three ways to pass one, and the answers without one ---------------------------


def test_key_as_basic_user_is_accepted(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    assert post(client, track("m1"), team.basic(team.ingest)).status_code == 200


def test_basic_credentials_without_base64_padding_are_accepted(client: FlaskClient, team: TeamKeys) -> None:
    padded = TeamKeys.basic(team.ingest)["Authorization"]
    assert padded.endswith("=")
    token = padded.rstrip("=")
    assert post(client, track("m1"), {"Authorization": token}).status_code == 200


def test_key_as_bearer_token_is_accepted(client: FlaskClient, team: TeamKeys) -> None:
    assert post(client, track("m1"), team.bearer(team.ingest)).status_code == 200


def test_key_as_basic_password_is_accepted(client: FlaskClient, team: TeamKeys) -> None:
    import base64

    token = base64.b64encode(f":{team.ingest}".encode()).decode()
    assert post(client, track("m1"), {"Authorization": f"Basic {token}"}).status_code == 200


def test_write_key_in_the_body_is_accepted_and_not_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    single = post(client, {**track("m1"), "writeKey": team.ingest}, {})
    batch = post(client, {"batch": [track("m2")], "WriteKey": team.ingest}, {}, "/v1/batch")
    assert (single.status_code, batch.status_code) == (200, 200)
    rows = stored(engine, team.id)
    assert [r.message_id for r in rows] == ["m1", "m2"]
    assert all(team.ingest not in json.dumps(r.raw) for r in rows)


def test_no_key_is_401_with_a_basic_challenge(client: FlaskClient) -> None:
    response = post(client, track("m1"), {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.get_json()["code"] == "missing_key"
    assert "writeKey" in response.get_json()["message"]


@pytest.mark.parametrize(
    "header",
    [
        TeamKeys.basic("tlk_not-a-real-key"),
        TeamKeys.bearer("tlk_not-a-real-key"),
        {"Authorization": "Basic %%%not-base64"},
    ],
)
def test_unknown_key_is_401_with_a_challenge(client: FlaskClient, header: dict[str, str]) -> None:
    response = post(client, track("m1"), header)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.get_json()["code"] == "invalid_key"


def test_unknown_write_key_in_the_body_is_401(client: FlaskClient) -> None:
    response = post(client, {**track("m1"), "writeKey": "tlk_not-a-real-key"}, {})
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_key"


def test_key_in_the_header_is_checked_before_the_body_is_read(client: FlaskClient) -> None:
    response = client.post("/v1/segment", data=b"{not json", headers=TeamKeys.basic("tlk_wrong"))
    assert response.status_code == 401


@pytest.mark.parametrize("column", ["revoked_at", "expires_at"])
def test_revoked_or_expired_key_is_401_and_nothing_is_stored(
    app: Flask, client: FlaskClient, team: TeamKeys, engine: Engine, column: str
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE api_keys SET {column} = :past WHERE team_id = :t AND 'ingest' = ANY(scopes)"),
            {"past": past, "t": team.id},
        )
    app.extensions["timeline"].keys.forget()
    response = post(client, track("m1"), team.basic(team.ingest))
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_key"
    assert stored(engine, team.id) == []


def test_key_without_the_ingest_scope_is_403(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    response = post(client, track("m1"), team.basic(team.read))
    assert response.status_code == 403
    assert response.get_json()["code"] == "missing_scope"
    assert "ingest" in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_admin_key_has_every_scope_and_may_ingest(client: FlaskClient, team: TeamKeys) -> None:
    assert post(client, track("m1"), team.bearer(team.admin)).status_code == 200


# --- the Spec: what an event must hold -------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "track", "userId": "u1"}, "event"),
        ({"type": "track", "userId": "u1", "event": ""}, "event"),
        ({"type": "track", "userId": "u1", "event": 42}, "event"),
        ({"type": "page", "name": "Home"}, "userId"),
        ({"type": "page", "userId": "", "anonymousId": None}, "userId"),
        ({"type": "group", "userId": "u1"}, "groupId"),
        ({"type": "group", "userId": "u1", "groupId": ""}, "groupId"),
        ({"type": "alias", "userId": "u1"}, "previousId"),
        ({"type": "alias", "previousId": "a1", "anonymousId": "a1"}, "userId"),
        ({"type": "delete", "anonymousId": "a1"}, "userId"),
        ({"type": "identify", "userId": "u1", "traits": ["a"]}, "traits"),
        ({"type": "track", "userId": "u1", "event": "e", "properties": "x"}, "properties"),
        ({"type": "page", "userId": "u1", "context": 5}, "context"),
        ({"type": "page", "userId": "u1", "integrations": True}, "integrations"),
        ({"type": "page", "userId": "u1", "name": 5}, "name"),
        ({"type": "page", "userId": "u1", "messageId": "m" * 101}, "messageId"),
        ({"type": "page", "userId": "u" * 256}, "userId"),
        ({"type": "page", "anonymousId": "a" * 256}, "anonymousId"),
        ({"type": "group", "userId": "u1", "groupId": "g" * 256}, "groupId"),
        ({"type": "page", "userId": "u1", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "identify", "userId": "u1", "traits": {"t" * 256: 1}}, "traits"),
        ({"type": "group", "userId": "u1", "groupId": "g1", "traits": {"t" * 256: 1}}, "traits"),
        ({"type": "page", "userId": "u1", "context": {"traits": {"t" * 256: 1}}}, "context.traits"),
        ({"userId": "u1"}, "type"),
        ({"type": 7, "userId": "u1"}, "type"),
        ({"type": None, "userId": "u1"}, "type"),
    ],
)
def test_spec_violation_is_400_naming_the_field_and_nothing_is_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine, event: dict[str, Any], field: str
) -> None:
    response = post(client, event, team.basic(team.ingest))
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["code"] == "invalid_event"
    assert field in body["errors"]
    assert field in body["message"]
    assert stored(engine, team.id) == []


def test_null_properties_traits_context_and_integrations_are_accepted(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    nulls = {"properties": None, "traits": None, "context": None, "integrations": None}
    response = post(client, {**track("m1"), **nulls}, team.basic(team.ingest))
    assert response.status_code == 200
    assert stored(engine, team.id)[0].raw["context"] is None


def test_ids_at_their_length_limits_are_accepted(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    event = {"type": "group", "userId": "u" * 255, "groupId": "g" * 255, "messageId": "m" * 100}
    assert post(client, event, team.basic(team.ingest)).status_code == 200
    [row] = stored(engine, team.id)
    assert (len(row.user_id), len(row.group_id), len(row.message_id)) == (255, 255, 100)


def test_trait_names_of_255_characters_are_stored_and_folded(
    client: FlaskClient, team: TeamKeys, engine: Engine, fold: Any
) -> None:
    # Longer names are refused because the fold indexes traits by name (a btree entry is
    # at most ~2.7 KB): an event with one could be stored but never folded.
    name = "\U0001f600" * 255
    identify = {
        "type": "identify",
        "userId": "long-names",
        "traits": {name: 1},
        "context": {"traits": {name: 2}},
    }
    assert post(client, identify, team.basic(team.ingest)).status_code == 200
    group = {"type": "group", "userId": "long-names", "groupId": "g1", "traits": {name: 3}}
    assert post(client, group, team.basic(team.ingest)).status_code == 200
    fold()
    assert feed_types(client, team, "long-names") == ["identify", "group"]


@pytest.mark.parametrize("kind", ["purchase", "Track", "", "batch"])
def test_unsupported_type_is_501_naming_the_supported_ones(
    client: FlaskClient, team: TeamKeys, engine: Engine, kind: str
) -> None:
    response = post(client, {"type": kind, "userId": "u1"}, team.basic(team.ingest))
    assert response.status_code == 501
    body = response.get_json()
    assert body["code"] == "unsupported_type"
    assert all(t in body["message"] for t in SPEC_TYPES)
    assert stored(engine, team.id) == []


def test_group_and_previous_id_count_only_on_their_own_types(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    odd = track("m1", groupId={"not": "an id"}, previousId=[1, 2])
    assert post(client, odd, team.basic(team.ingest)).status_code == 200
    [row] = stored(engine, team.id)
    assert (row.group_id, row.previous_id) == (None, None)
    assert row.raw["groupId"] == {"not": "an id"}  # kept as sent: unknown data on a track


# --- Segment's quirks -------------------------------------------------------------------


def test_top_level_keys_in_any_casing_are_read_and_stored_canonically(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    event = {
        "TYPE": "track",
        "userid": "u1",
        "MessageId": "m1",
        "Event": "Signed Up",
        "properties": {"Plan": "pro"},
        "Timestamp": T0,
        "customKey": 1,
    }
    response = post(client, event, team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()
    [row] = stored(engine, team.id)
    assert (row.type, row.user_id, row.message_id, row.event_name) == ("track", "u1", "m1", "Signed Up")
    assert row.event_time == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert set(row.raw) == {"type", "userId", "messageId", "event", "properties", "timestamp", "customKey"}
    assert row.raw["properties"] == {"Plan": "pro"}  # only the top level is re-cased


def test_a_canonical_key_wins_over_another_casing_of_it(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    response = post(client, {**track("m1"), "USERID": "other"}, team.basic(team.ingest))
    assert response.status_code == 200
    assert stored(engine, team.id)[0].user_id == "u1"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [(12345, "12345"), (-7, "-7"), (4.0, "4"), (1.5, "1.5"), (10**30, str(10**30)), ("007", "007")],
)
def test_numeric_ids_are_stored_as_strings(
    client: FlaskClient, team: TeamKeys, engine: Engine, sent: Any, kept: str
) -> None:
    event = {"type": "group", "userId": sent, "anonymousId": sent, "groupId": sent, "messageId": sent}
    response = post(client, event, team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()
    alias = {"type": "alias", "userId": sent, "previousId": sent, "messageId": sent}
    assert post(client, alias, team.basic(team.ingest)).status_code == 200
    group, link = stored(engine, team.id)
    assert (group.user_id, group.anonymous_id, group.group_id, group.message_id) == (kept,) * 4
    assert link.previous_id == kept
    assert group.raw["userId"] == kept and link.raw["previousId"] == kept


@pytest.mark.parametrize("bad", [True, [], {}, [1], {"id": 1}])
def test_ids_of_other_json_types_are_400(
    client: FlaskClient, team: TeamKeys, engine: Engine, bad: Any
) -> None:
    response = post(client, {"type": "page", "userId": bad}, team.basic(team.ingest))
    assert response.status_code == 400
    assert response.get_json()["errors"]["userId"] == ["Must be a string or a number."]
    assert stored(engine, team.id) == []


def test_null_id_is_absent_and_the_other_id_suffices(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    response = post(client, {"type": "page", "userId": None, "anonymousId": "a1"}, team.basic(team.ingest))
    assert response.status_code == 200
    [row] = stored(engine, team.id)
    assert (row.user_id, row.anonymous_id) == (None, "a1")


def test_event_without_message_id_gets_a_stable_derived_one_so_resends_dedupe(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    event = {"type": "track", "userId": "u1", "event": "Clicked", "timestamp": T0, "sentAt": T0}
    first = post(client, event, team.basic(team.ingest))
    # A retry carries a new sentAt; an empty messageId counts as none.
    again = post(
        client, {**event, "sentAt": "2024-03-01T12:00:05Z", "messageId": ""}, team.basic(team.ingest)
    )
    other = post(client, {**event, "event": "Clicked twice"}, team.basic(team.ingest))
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 200)
    rows = stored(engine, team.id)
    assert len(rows) == 2
    assert all(r.message_id.startswith("derived-") and r.raw["messageId"] == r.message_id for r in rows)
    assert rows[0].message_id != rows[1].message_id


def test_sends_without_message_id_that_differ_only_in_sent_at_are_separate_events(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    # Issue 22: three logins on three days, no messageId, no timestamp: three events.
    logins = [
        {"type": "track", "userId": "M2", "event": "Logged In", "sentAt": f"2024-03-0{day}T09:00:00Z"}
        for day in (4, 5, 6)
    ]
    for login in logins:
        assert post(client, login, team.basic(team.ingest), "/v1/track").status_code == 200
    assert post(client, logins[0], team.basic(team.ingest), "/v1/track").status_code == 200  # unchanged
    rows = stored(engine, team.id)
    assert len(rows) == 3 and len({r.message_id for r in rows}) == 3


def test_identical_events_without_message_id_in_one_batch_are_each_kept_and_a_resend_dedupes(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    click = {"type": "track", "userId": "u1", "event": "Clicked"}
    body = {"batch": [click, click, click], "sentAt": "2024-03-04T09:00:00Z"}
    first = post(client, body, team.basic(team.ingest), "/v1/batch")
    assert first.get_json()["accepted"] == 3 and first.get_json()["duplicates"] == 0
    again = post(client, body, team.basic(team.ingest), "/v1/batch")
    assert again.get_json()["accepted"] == 0 and again.get_json()["duplicates"] == 3
    assert len(stored(engine, team.id)) == 3


def test_an_event_without_message_id_nor_any_time_gets_a_fresh_id_each_send(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    click = {"type": "track", "userId": "u1", "event": "Clicked"}
    for _ in range(2):
        assert post(client, click, team.basic(team.ingest)).status_code == 200
    assert len(stored(engine, team.id)) == 2


def test_the_same_message_id_with_another_type_is_another_message(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    # Segment's own docs reuse one messageId across their identify, screen and group samples.
    post(client, {"type": "identify", "userId": "u1", "messageId": "m1"}, team.basic(team.ingest))
    post(client, {"type": "page", "userId": "u1", "messageId": "m1"}, team.basic(team.ingest))
    assert sorted(r.type for r in stored(engine, team.id)) == ["identify", "page"]


def test_duplicate_message_is_stored_once_and_answered_200_both_times(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    payload = load_fixture("track-spec-doc.json")
    first = post(client, payload, team.basic(team.ingest))
    second = post(client, payload, team.basic(team.ingest))
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.get_json() == {"success": True}
    assert len(stored(engine, team.id)) == 1


def test_same_message_id_in_two_teams_is_two_events(
    client: FlaskClient, team: TeamKeys, other_team: TeamKeys, engine: Engine
) -> None:
    payload = load_fixture("track-spec-doc.json")
    post(client, payload, team.basic(team.ingest))
    post(client, payload, other_team.basic(other_team.ingest))
    assert len(stored(engine, team.id)) == 1
    assert len(stored(engine, other_team.id)) == 1


# --- event time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ({"timestamp": "2024-03-01T13:00:00+01:00", "originalTimestamp": "2020-01-01T00:00:00Z"}, T0),
        ({"originalTimestamp": "2024-3-1T12:0:0Z", "receivedAt": "2020-01-01T00:00:00Z"}, T0),
        ({"originalTimestamp": "2024-03-01 12:00:00.000000000 +0000 UTC m=+1.5"}, T0),
        ({"originalTimestamp": "not a time", "receivedAt": "2024-03-01T12:00:00.000Z"}, T0),
        ({"receivedAt": "2024-03-01T07:00:00-05:00"}, T0),
        ({"timestamp": ""}, "2024-03-05T09:30:00Z"),
        ({}, "2024-03-05T09:30:00Z"),
    ],
)
def test_event_time_is_timestamp_else_original_else_received_else_ours(
    client: FlaskClient, team: TeamKeys, engine: Engine, times: dict[str, str], expected: str
) -> None:
    with freeze_time("2024-03-05T09:30:00Z"):
        response = post(client, {**track("m1"), **times}, team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()
    [row] = stored(engine, team.id)
    assert row.event_time == datetime.fromisoformat(expected)


def test_delete_with_only_gos_original_timestamp_is_stored_at_that_time(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    delete = load_fixture("delete-partner-doc.json")
    del delete["timestamp"], delete["receivedAt"]
    assert post(client, delete, team.basic(team.ingest)).status_code == 200
    [row] = stored(engine, team.id)
    assert row.event_time == datetime(2020, 5, 9, 23, 54, 49, 209808, tzinfo=UTC)


# --- every answer is JSON ------------------------------------------------------------------


def test_every_ingest_answer_is_json_with_a_message_and_code(client: FlaskClient, team: TeamKeys) -> None:
    answers = [
        post(client, track("m1"), team.basic(team.ingest)),
        client.post("/v1/segment", data=b"{", headers=team.basic(team.ingest)),
        post(client, track("m1"), {}),
        post(client, track("m1"), team.basic(team.read)),
        post(client, {"batch": [{}] * 2501}, team.basic(team.ingest)),
        post(client, {"type": "x", "userId": "u"}, team.basic(team.ingest)),
        client.get("/v1/segment"),
    ]
    assert [a.status_code for a in answers] == [200, 400, 401, 403, 413, 501, 405]
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)
    assert all({"message", "code"} <= set(a.get_json()) for a in answers[1:])
    assert answers[1].get_json()["errors"] == {"body": [answers[1].get_json()["message"]]}


def test_tracking_api_calls_reach_the_feed(client: FlaskClient, team: TeamKeys, fold: Any) -> None:
    headers = team.basic(team.ingest)
    for kind, extra in [
        ("identify", {"traits": {"email": "a@example.com"}}),
        ("track", {"event": "Signed Up"}),
        ("page", {"name": "Home"}),
        ("screen", {"name": "Settings"}),
        ("group", {"groupId": "g1"}),
        ("alias", {"previousId": "old-1"}),
    ]:
        body = {"userId": "route-user", "messageId": f"m-{kind}", "timestamp": T0, **extra}
        assert post(client, body, headers, f"/v1/{kind}").status_code == 200
    fold()
    assert sorted(feed_types(client, team, "route-user")) == sorted(TRACKING_ROUTES)


def metric(client: FlaskClient, sample: str) -> float:
    """A sample's value on /metrics (0 when it has not been counted yet)."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_events_accepted_and_rejected_by_type_and_reason(
    client: FlaskClient, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # this process's own counters
    accepted = 'events_accepted_total{type="track"}'
    refused = 'events_rejected_total{reason="invalid_event",type="track"}'
    unsupported = 'events_rejected_total{reason="unsupported_type",type="other"}'
    bad_json = 'ingest_requests_rejected_total{reason="invalid_json"}'
    before = [metric(client, s) for s in (accepted, refused, unsupported, bad_json)]
    batch = [track("m1"), track("m2"), {"type": "track", "userId": "u1"}, {"type": "purchase", "userId": "u"}]
    post(client, {"batch": batch}, team.basic(team.ingest), "/v1/batch")
    client.post("/v1/segment", data=b"{", headers=team.basic(team.ingest))
    after = [metric(client, s) for s in (accepted, refused, unsupported, bad_json)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 1, 1, 1]
