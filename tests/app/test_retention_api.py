"""A team's retention through the admin API and `flask teams retention`, and what ingest
does with an event that arrives older than it (docs/retention.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app import create_app
from service.settings import Settings
from store.retention import CACHE_SECONDS
from tests.conftest import TeamKeys

OLD = "2020-01-01T00:00:00Z"


def put(client: FlaskClient, team: TeamKeys, body: Any, secret: str | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.put(
        "/api/v1/team/retention",
        data=data,
        headers={**TeamKeys.bearer(secret or team.admin), "Content-Type": "application/json"},
    )


def stored(engine: Engine, team: TeamKeys) -> set[str]:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT message_id FROM events WHERE team_id = :t"), {"t": team.id})
        return {row.message_id for row in found}


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def capped_app(settings: Settings) -> Iterator[Flask]:
    """The service as an operator with RETENTION_DAYS=90 runs it."""
    app = create_app({"TESTING": True, "SETTINGS": replace(settings, retention_days=90)})
    yield app
    app.extensions["timeline"].dispose()


# --- the setting -------------------------------------------------------------------------------


def test_a_team_keeps_everything_until_its_admin_sets_a_retention(
    client: FlaskClient, team: TeamKeys
) -> None:
    response = client.get("/api/v1/team/retention", headers=team.bearer(team.admin))
    assert response.status_code == 200
    assert response.get_json() == {
        "retention_days": None,
        "operator_retention_days": None,
        "effective_retention_days": None,
    }
    response = put(client, team, {"retention_days": 30})
    assert response.status_code == 200
    assert response.get_json()["effective_retention_days"] == 30
    shown = client.get("/api/v1/team/retention", headers=team.bearer(team.admin)).get_json()
    assert (shown["retention_days"], shown["effective_retention_days"]) == (30, 30)
    cleared = put(client, team, {"retention_days": None}).get_json()
    assert cleared["retention_days"] is None and cleared["effective_retention_days"] is None


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        ({"retention_days": -5}, "at least 1 day"),
        ({"retention_days": 0}, "at least 1 day"),
        ({"retention_days": 1.5}, "Not a valid integer"),
        ({"retention_days": 30.0}, "Not a valid integer"),
        ({"retention_days": "30"}, "Not a valid integer"),
        ({"retention_days": True}, "Not a valid integer"),
        ({"retention_days": 3651}, "at most 3650 days"),
        ({"retention_days": 10**30}, "at most 3650 days"),
        ({}, "Missing data for required field"),
        ({"retention_day": 30}, "Unknown field"),
    ],
)
def test_a_bad_retention_is_a_400_that_says_what_to_fix(
    client: FlaskClient, team: TeamKeys, body: dict[str, Any], wanted: str
) -> None:
    response = put(client, team, body)
    assert response.status_code == 400
    answer = response.get_json()
    assert set(answer) == {"message", "code", "errors"}
    assert answer["code"] == "invalid_body"
    assert wanted in answer["message"]
    shown = client.get("/api/v1/team/retention", headers=team.bearer(team.admin)).get_json()
    assert shown["retention_days"] is None  # nothing changed


@pytest.mark.parametrize("body", [b"[30]", b"30", b"not json", b""])
def test_a_body_that_is_not_an_object_is_a_400(client: FlaskClient, team: TeamKeys, body: bytes) -> None:
    response = put(client, team, body)
    assert response.status_code == 400
    assert response.get_json()["code"] in ("invalid_json", "invalid_body")


def test_the_setting_needs_the_admin_scope(client: FlaskClient, team: TeamKeys) -> None:
    for secret in (team.read, team.ingest):
        assert put(client, team, {"retention_days": 1}, secret).status_code == 403
        assert client.get("/api/v1/team/retention", headers=team.bearer(secret)).status_code == 403
    assert client.put("/api/v1/team/retention", json={"retention_days": 1}).status_code == 401
    shown = client.get("/api/v1/team/retention", headers=team.bearer(team.admin)).get_json()
    assert shown["retention_days"] is None


def test_one_teams_setting_is_its_own(client: FlaskClient, team: TeamKeys, other_team: TeamKeys) -> None:
    assert put(client, team, {"retention_days": 7}).status_code == 200
    shown = client.get("/api/v1/team/retention", headers=other_team.bearer(other_team.admin)).get_json()
    assert shown["retention_days"] is None


def test_a_team_may_shorten_the_operators_retention_but_not_lengthen_it(
    capped_app: Flask, team: TeamKeys
) -> None:
    client = capped_app.test_client()
    shown = client.get("/api/v1/team/retention", headers=team.bearer(team.admin)).get_json()
    assert shown == {"retention_days": None, "operator_retention_days": 90, "effective_retention_days": 90}
    longer = put(client, team, {"retention_days": 120})
    assert longer.status_code == 400
    assert "at most 90 days" in longer.get_json()["message"]
    assert "RETENTION_DAYS" in longer.get_json()["errors"]["retention_days"][0]
    shorter = put(client, team, {"retention_days": 14}).get_json()
    assert shorter == {"retention_days": 14, "operator_retention_days": 90, "effective_retention_days": 14}


def test_the_operators_retention_is_read_once_and_refused_when_absurd() -> None:
    base = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x"}
    assert Settings.from_env(base).retention_days is None
    assert Settings.from_env({**base, "RETENTION_DAYS": "30"}).retention_days == 30
    for bad in ("0", "-1", "30d", "1.5", "3651"):
        with pytest.raises(RuntimeError, match="RETENTION_DAYS"):
            Settings.from_env({**base, "RETENTION_DAYS": bad})


# --- at ingest ---------------------------------------------------------------------------------


def test_an_event_older_than_the_retention_is_answered_200_not_stored_and_counted(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    assert put(client, team, {"retention_days": 30}).status_code == 200  # applies at once here
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "Old", "messageId": "old", "timestamp": OLD},
            {"type": "identify", "userId": "u", "messageId": "old-i", "timestamp": OLD},
            {"type": "track", "userId": "u", "event": "New", "messageId": "new", "timestamp": now_iso()},
            {"type": "delete", "userId": "gone", "messageId": "old-delete", "timestamp": OLD},
        ]
    }
    response = client.post("/v1/batch", json=batch, headers=team.basic(team.ingest))
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["accepted"], answer["duplicates"], answer["expired"], answer["rejected"]) == (2, 0, 2, [])
    single = {"type": "track", "userId": "u", "event": "Old", "messageId": "old-2", "timestamp": OLD}
    response = client.post("/v1/track", json=single, headers=team.basic(team.ingest))
    assert (response.status_code, response.get_json()) == (200, {"success": True})
    # A delete is never expired: it must erase the person whatever its date.
    assert stored(engine, team) == {"new", "old-delete"}
    summary = client.get("/api/v1/ingest/summary", headers=team.bearer(team.read)).get_json()["last_24h"]
    assert (summary["accepted"], summary["expired"]) == (2, 3)
    assert summary["by_type"]["track"] == {"accepted": 1, "duplicates": 0, "refused": 0, "expired": 2}
    assert summary["by_type"]["identify"]["expired"] == 1


def test_a_team_without_retention_stores_old_events_as_before(
    client: FlaskClient, engine: Engine, team: TeamKeys, other_team: TeamKeys
) -> None:
    assert put(client, other_team, {"retention_days": 1}).status_code == 200
    event = {"type": "track", "userId": "u", "event": "Old", "messageId": "old", "timestamp": OLD}
    response = client.post("/v1/batch", json={"batch": [event]}, headers=team.basic(team.ingest))
    assert response.get_json()["expired"] == 0
    assert stored(engine, team) == {"old"}


def test_the_operators_retention_applies_at_ingest(capped_app: Flask, engine: Engine, team: TeamKeys) -> None:
    client = capped_app.test_client()
    too_old = (datetime.now(UTC) - timedelta(days=91)).isoformat()
    recent = (datetime.now(UTC) - timedelta(days=89)).isoformat()
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "messageId": "a", "timestamp": too_old},
            {"type": "track", "userId": "u", "event": "E", "messageId": "b", "timestamp": recent},
        ]
    }
    answer = client.post("/v1/batch", json=batch, headers=team.basic(team.ingest)).get_json()
    assert (answer["accepted"], answer["expired"]) == (1, 1)
    assert stored(engine, team) == {"b"}


# --- the CLI -----------------------------------------------------------------------------------


def cli(app: Flask, *args: str) -> tuple[int, Any, str]:
    result = app.test_cli_runner().invoke(args=["teams", "retention", *args])
    out = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, out, result.stderr


def test_the_cli_shows_sets_and_clears_a_teams_retention(app: Flask, team: TeamKeys) -> None:
    assert cli(app, str(team.id))[:2] == (
        0,
        {"retention_days": None, "operator_retention_days": None, "effective_retention_days": None},
    )
    assert cli(app, str(team.id), "--days", "7")[1]["effective_retention_days"] == 7
    assert cli(app, str(team.id))[1]["retention_days"] == 7
    assert cli(app, str(team.id), "--clear")[1]["retention_days"] is None


def test_the_cli_refuses_what_the_api_refuses(capped_app: Flask, team: TeamKeys) -> None:
    for args, code in (
        (["--days", "0"], "invalid_retention"),
        (["--days", "91"], "invalid_retention"),
        (["--days", "7", "--clear"], "invalid_retention"),
    ):
        exit_code, _, err = cli(capped_app, str(team.id), *args)
        assert exit_code == 1 and json.loads(err)["code"] == code
    exit_code, _, err = cli(capped_app, str(team.id + 10_000_000))
    assert exit_code == 1 and json.loads(err)["code"] == "team_not_found"
    exit_code, _, err = cli(capped_app, str(team.id + 10_000_000), "--days", "5")
    assert exit_code == 1 and json.loads(err)["code"] == "team_not_found"


def test_another_web_process_applies_a_new_setting_within_its_cache_time(
    app: Flask, settings: Settings, engine: Engine, team: TeamKeys
) -> None:
    """Another app (as another web process) read the team before the change; it refuses old
    events within CACHE_SECONDS (5 s) after it, without being told (waited on, bounded)."""
    other = create_app({"TESTING": True, "SETTINGS": settings})
    try:
        here, there = app.test_client(), other.test_client()

        def post_old(n: int) -> int:
            event = {
                "type": "track",
                "userId": "u",
                "event": "Old",
                "messageId": f"old-{n}",
                "timestamp": OLD,
            }
            answer = there.post("/v1/batch", json={"batch": [event]}, headers=team.basic(team.ingest))
            return int(answer.get_json()["expired"])

        assert post_old(0) == 0  # read before the change: no retention
        assert put(here, team, {"retention_days": 30}).status_code == 200
        deadline = time.monotonic() + 3 * CACHE_SECONDS
        n = 1
        while post_old(n) == 0:
            assert time.monotonic() < deadline, "the other process still stores events older than 30 days"
            n += 1
            time.sleep(0.1)
    finally:
        other.extensions["timeline"].dispose()
    assert {"old-0"} <= stored(engine, team) and f"old-{n}" not in stored(engine, team)
