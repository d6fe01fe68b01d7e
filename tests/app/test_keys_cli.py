"""The operator's commands: `flask teams create` and `flask keys ...`, printing JSON (SPEC §5)."""

from __future__ import annotations

import json
from typing import Any

from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import TeamKeys


def run(app: Flask, *args: str) -> Result:
    result: Result = app.test_cli_runner().invoke(args=list(args))
    return result


def run_json(app: Flask, *args: str) -> Any:
    result = run(app, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def keys_answer(client: FlaskClient, secret: str) -> int:
    return int(client.get("/api/v1/keys", headers=TeamKeys.bearer(secret)).status_code)


def test_teams_create_prints_the_team_and_a_working_admin_key(app: Flask, client: FlaskClient) -> None:
    made = run_json(app, "teams", "create", "Acme")
    assert made["team"]["name"] == "Acme" and made["team"]["id"].isdigit()
    key = made["key"]
    assert key["scopes"] == ["admin", "ingest", "read"] and key["status"] == "active"
    assert key["key"].startswith("tlk_") and key["prefix"] == key["key"][:12]
    assert keys_answer(client, key["key"]) == 200


def test_keys_create_list_rotate_revoke(app: Flask, client: FlaskClient) -> None:
    team = run_json(app, "teams", "create", "Acme")
    team_id = team["team"]["id"]

    made = run_json(app, "keys", "create", "--team", team_id, "--name", "Segment", "--scope", "ingest")
    assert (made["name"], made["scopes"], made["status"]) == ("Segment", ["ingest"], "active")
    both = run_json(
        app, "keys", "create", "--team", team_id, "--name", "ops", "--scope", "read", "--scope", "admin"
    )
    assert both["scopes"] == ["admin", "read"]

    listing = run(app, "keys", "list", "--team", team_id)
    assert listing.exit_code == 0
    assert made["key"] not in listing.output and team["key"]["key"] not in listing.output
    names = [k["name"] for k in json.loads(listing.stdout)["data"]]
    assert names == ["ops", "Segment", "admin"]

    rotated = run_json(app, "keys", "rotate", made["id"], "--grace", "0")
    assert rotated["name"] == "Segment" and rotated["key"] != made["key"]
    assert rotated["rotated_from"]["status"] == "expired"

    revoked = run_json(app, "keys", "revoke", both["id"])
    assert revoked["status"] == "revoked" and "key" not in revoked
    assert keys_answer(client, both["key"]) == 401

    statuses = {k["id"]: k["status"] for k in run_json(app, "keys", "list", "--team", team_id)["data"]}
    assert statuses == {
        rotated["id"]: "active",
        both["id"]: "revoked",
        made["id"]: "expired",
        team["key"]["id"]: "active",
    }


def test_rotate_defaults_to_a_day_of_grace(app: Flask, client: FlaskClient) -> None:
    team = run_json(app, "teams", "create", "Acme")
    rotated = run_json(app, "keys", "rotate", team["key"]["id"])
    assert rotated["rotated_from"]["status"] == "expiring"
    old = team["key"]["key"]
    event = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-cli-grace"}
    # The old key sends events through its grace, and can no longer manage keys.
    assert client.post("/v1/segment", json=event, headers=TeamKeys.basic(old)).status_code == 200
    assert keys_answer(client, old) == 403
    assert keys_answer(client, rotated["key"]) == 200


def test_cli_changes_are_audited_as_cli(app: Flask, client: FlaskClient) -> None:
    team = run_json(app, "teams", "create", "Acme")
    made = run_json(app, "keys", "create", "--team", team["team"]["id"], "--name", "S", "--scope", "ingest")
    run_json(app, "keys", "revoke", made["id"])
    audit = client.get("/api/v1/keys/audit", headers=TeamKeys.bearer(team["key"]["key"])).get_json()
    assert [(e["action"], e["actor"], e["actor_key_id"]) for e in audit["data"]] == [
        ("revoke", "cli", None),
        ("create", "cli", None),
        ("create", "cli", None),
    ]


def test_revoking_the_last_admin_key_is_refused_with_json(app: Flask, client: FlaskClient) -> None:
    team = run_json(app, "teams", "create", "Acme")
    result = run(app, "keys", "revoke", team["key"]["id"])
    assert result.exit_code == 1
    assert json.loads(result.stderr)["code"] == "last_admin_key"
    assert keys_answer(client, team["key"]["key"]) == 200


def test_unknown_team_key_or_scope_is_an_error(app: Flask) -> None:
    missing_team = run(app, "keys", "create", "--team", "999999999", "--name", "S", "--scope", "read")
    assert missing_team.exit_code == 1 and json.loads(missing_team.stderr)["code"] == "team_not_found"
    missing_key = run(app, "keys", "rotate", "999999999")
    assert missing_key.exit_code == 1 and json.loads(missing_key.stderr)["code"] == "not_found"
    assert run(app, "keys", "revoke", "999999999").exit_code == 1
    assert run(app, "keys", "list", "--team", "999999999").exit_code == 1
    bad_scope = run(app, "keys", "create", "--team", "1", "--name", "S", "--scope", "write")
    assert bad_scope.exit_code == 2 and "write" in bad_scope.output
    assert run(app, "keys", "rotate", "1", "--grace", str(31 * 86400)).exit_code == 2
    assert run(app, "keys", "create", "--team", "1", "--name", " ", "--scope", "read").exit_code == 2
