"""The destination URL: what Segment posts, and what it gets back (SPEC §2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys, fixture_names, load_fixture


def stored(engine: Engine, team_id: int) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT message_id, type, user_id, raw FROM events WHERE team_id = :t ORDER BY id"),
            {"t": team_id},
        ).all()


def post(client: FlaskClient, body: Any, headers: dict[str, str], path: str = "/v1/segment") -> Any:
    return client.post(path, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"})


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


def test_duplicate_message_is_stored_once(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    payload = load_fixture("track-spec-doc.json")
    first = post(client, payload, team.basic(team.ingest))
    second = post(client, payload, team.basic(team.ingest))
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(stored(engine, team.id)) == 1


def test_same_message_id_in_two_teams_is_two_events(
    client: FlaskClient, team: TeamKeys, other_team: TeamKeys, engine: Engine
) -> None:
    payload = load_fixture("track-spec-doc.json")
    post(client, payload, team.basic(team.ingest))
    post(client, payload, other_team.basic(other_team.ingest))
    assert len(stored(engine, team.id)) == 1
    assert len(stored(engine, other_team.id)) == 1


def test_invalid_event_is_400_with_a_message_and_nothing_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    response = post(client, {"type": "track", "userId": "u1"}, team.basic(team.ingest))
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_event"
    assert "event" in body["errors"]
    assert "event" in body["message"]
    assert stored(engine, team.id) == []


def test_missing_identity_is_400(client: FlaskClient, team: TeamKeys) -> None:
    response = post(client, {"type": "page", "name": "Home"}, team.basic(team.ingest))
    assert response.status_code == 400
    assert "userId or anonymousId" in response.get_json()["message"]


def test_malformed_json_is_400(client: FlaskClient, team: TeamKeys) -> None:
    response = client.post("/v1/segment", data=b'{"type": "track",', headers=team.basic(team.ingest))
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_json"


def test_unknown_key_is_401_with_a_challenge(client: FlaskClient) -> None:
    response = post(client, load_fixture("track-spec-doc.json"), TeamKeys.basic("tlk_not-a-real-key"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.get_json()["code"] == "invalid_key"


def test_no_key_is_401(client: FlaskClient) -> None:
    response = post(client, load_fixture("track-spec-doc.json"), {})
    assert response.status_code == 401
    assert response.get_json()["code"] == "missing_key"


def test_read_only_key_cannot_ingest(client: FlaskClient, team: TeamKeys) -> None:
    response = post(client, load_fixture("track-spec-doc.json"), team.basic(team.read))
    assert response.status_code == 403
    assert "ingest" in response.get_json()["message"]


def test_unsupported_type_is_501(client: FlaskClient, team: TeamKeys) -> None:
    response = post(client, {"type": "purchase", "userId": "u1"}, team.basic(team.ingest))
    assert response.status_code == 501
    assert response.get_json()["code"] == "unsupported_type"
