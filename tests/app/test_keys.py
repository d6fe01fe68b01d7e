"""Key management as a team admin sees it: create, list, rotate, revoke, audit (SPEC §5).

Time is frozen with freezegun where a test is about time. freezegun also freezes
`time.monotonic`, which the key cache's 0.5 s TTL uses, so in those tests a key may stay
cached for the whole test: what they prove is that expiry is checked against the clock
on every request even for a cached key, which is what production relies on. The TTL
itself is proven with real time in tests/store/test_apikeys.py and across processes in
tests/app/test_keys_processes.py.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, text

from store.apikeys import create_key
from tests.conftest import TeamKeys

T0 = "2024-03-01T12:00:00Z"
DAY = 24 * 3600

SCHEMATHESIS_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

EVENT = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-keys-1"}


def auth(secret: str) -> dict[str, str]:
    return TeamKeys.bearer(secret)


def post_json(client: FlaskClient, path: str, secret: str, body: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    return client.post(path, data=data, headers={**auth(secret), "Content-Type": "application/json"})


def create(client: FlaskClient, admin: str, name: str = "Segment", scopes: list[str] | None = None) -> Any:
    response = post_json(client, "/api/v1/keys", admin, {"name": name, "scopes": scopes or ["ingest"]})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def rotate(client: FlaskClient, admin: str, key_id: str, body: Any = None) -> Any:
    return post_json(client, f"/api/v1/keys/{key_id}/rotate", admin, body)


def listed(client: FlaskClient, admin: str) -> dict[str, Any]:
    response = client.get("/api/v1/keys?limit=200", headers=auth(admin))
    assert response.status_code == 200, response.get_json()
    return {key["id"]: key for key in response.get_json()["data"]}


def ingest(client: FlaskClient, secret: str, message_id: str = "m1") -> int:
    """What Segment sees when it sends an event with this key (Basic, as Segment does)."""
    response = client.post(
        "/v1/segment",
        data=json.dumps({**EVENT, "messageId": message_id}),
        headers={**TeamKeys.basic(secret), "Content-Type": "application/json"},
    )
    return int(response.status_code)


def admin_key_id(client: FlaskClient, team: TeamKeys) -> str:
    return next(k["id"] for k in listed(client, team.admin).values() if k["name"] == "admin")


@pytest.fixture
def keys_cache(app: Flask) -> Any:
    """The app's key cache, emptied so a test starts from what is in Postgres."""
    cache = app.extensions["timeline"].keys
    cache.forget()
    return cache


def test_created_key_is_shown_once_and_works_for_its_scope(client: FlaskClient, team: TeamKeys) -> None:
    made = create(client, team.admin, "Segment production", ["ingest"])
    secret = made["key"]
    assert secret.startswith("tlk_") and len(secret) == 36
    assert made["prefix"] == secret[:12]
    assert (made["name"], made["scopes"], made["status"]) == ("Segment production", ["ingest"], "active")
    assert made["last_used_at"] is None and made["expires_at"] is None and made["revoked_at"] is None

    assert ingest(client, secret) == 200
    assert client.get("/api/v1/keys", headers=auth(secret)).status_code == 403  # not admin

    listing = client.get("/api/v1/keys", headers=auth(team.admin))
    assert secret not in listing.get_data(as_text=True)
    shown = listing.get_json()["data"][0]
    assert shown["id"] == made["id"] and "key" not in shown
    assert set(shown) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "status",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "rotated_from_id",
    }


def test_only_the_digest_is_stored(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    made = create(client, team.admin)
    with engine.connect() as connection:
        dumped = connection.execute(
            text("SELECT row_to_json(k)::text FROM api_keys k WHERE id = :id"), {"id": int(made["id"])}
        ).scalar_one()
    assert made["key"] not in dumped
    assert made["key"][12:] not in dumped


def test_key_management_needs_an_admin_key(client: FlaskClient, team: TeamKeys) -> None:
    assert client.get("/api/v1/keys").status_code == 401
    for secret in (team.read, team.ingest):
        response = client.get("/api/v1/keys/audit", headers=auth(secret))
        assert response.status_code == 403
        assert "admin" in response.get_json()["message"]
        assert post_json(client, "/api/v1/keys", secret, {"name": "x", "scopes": ["read"]}).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["read"]}, "name"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "   ", "scopes": ["read"]}, "name"),
        ({"name": "a\u0000b", "scopes": ["read"]}, "name"),
        ({"name": 7, "scopes": ["read"]}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["write"]}, "scopes"),
        ({"name": "x", "scopes": "read"}, "scopes"),
        ({"name": "x", "scopes": [1]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "expires": 5}, "expires"),
        (["name", "scopes"], "body"),
    ],
)
def test_bad_create_body_is_400_naming_the_field(
    client: FlaskClient, team: TeamKeys, body: Any, field: str
) -> None:
    response = post_json(client, "/api/v1/keys", team.admin, body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["code"] in ("invalid_body", "invalid_json")
    assert field in error["errors"]
    assert field in error["message"] or field == "body"


def test_malformed_json_is_400(client: FlaskClient, team: TeamKeys) -> None:
    response = client.post("/api/v1/keys", data=b'{"name": ', headers=auth(team.admin))
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_json"


@pytest.mark.parametrize("grace", [-1, 30 * DAY + 1, "3600", 3600.5, True, None])
def test_bad_grace_is_400(client: FlaskClient, team: TeamKeys, grace: Any) -> None:
    made = create(client, team.admin)
    response = rotate(client, team.admin, made["id"], {"grace_seconds": grace})
    assert response.status_code == 400
    assert "grace_seconds" in response.get_json()["errors"]
    assert listed(client, team.admin)[made["id"]]["status"] == "active"  # nothing rotated


def test_misspelt_rotate_field_is_400_not_the_default(client: FlaskClient, team: TeamKeys) -> None:
    made = create(client, team.admin)
    response = rotate(client, team.admin, made["id"], {"grace": 0})
    assert response.status_code == 400
    assert "grace" in response.get_json()["errors"]


def test_rotated_key_works_through_its_grace_period_then_401(
    client: FlaskClient, team: TeamKeys, keys_cache: Any
) -> None:
    with freeze_time(T0) as clock:
        old = create(client, team.admin, "Segment", ["ingest"])
        assert ingest(client, old["key"], "before") == 200  # now cached in this process

        response = rotate(client, team.admin, old["id"], {"grace_seconds": 3600})
        assert response.status_code == 201
        new = response.get_json()
        assert (new["name"], new["scopes"], new["status"]) == ("Segment", ["ingest"], "active")
        assert new["key"] != old["key"] and new["rotated_from_id"] == old["id"]
        assert new["rotated_from"]["id"] == old["id"]
        assert new["rotated_from"]["expires_at"] == "2024-03-01T13:00:00Z"
        assert ingest(client, new["key"], "new-at-once") == 200

        statuses = {k: v["status"] for k, v in listed(client, team.admin).items()}
        assert (statuses[old["id"]], statuses[new["id"]]) == ("expiring", "active")

        clock.tick(timedelta(seconds=3599))
        assert ingest(client, old["key"], "old-in-grace") == 200
        clock.tick(timedelta(seconds=1))
        assert ingest(client, old["key"], "old-after-grace") == 401
        assert ingest(client, new["key"], "new-after-grace") == 200
        assert listed(client, team.admin)[old["id"]]["status"] == "expired"


def test_rotation_defaults_to_24_hours(client: FlaskClient, team: TeamKeys, keys_cache: Any) -> None:
    with freeze_time(T0) as clock:
        old = create(client, team.admin)
        response = post_json(client, f"/api/v1/keys/{old['id']}/rotate", team.admin)  # no body
        assert response.status_code == 201
        assert response.get_json()["rotated_from"]["expires_at"] == "2024-03-02T12:00:00Z"
        clock.tick(timedelta(hours=23, minutes=59))
        assert ingest(client, old["key"]) == 200
        clock.tick(timedelta(minutes=1))
        assert ingest(client, old["key"]) == 401


def test_grace_zero_cuts_the_old_key_at_once(client: FlaskClient, team: TeamKeys) -> None:
    old = create(client, team.admin)
    assert ingest(client, old["key"]) == 200
    new = rotate(client, team.admin, old["id"], {"grace_seconds": 0}).get_json()
    assert new["rotated_from"]["status"] == "expired"
    assert ingest(client, old["key"]) == 401
    assert ingest(client, new["key"]) == 200


def test_revoked_key_is_401_at_once_and_listed_as_revoked(
    client: FlaskClient, team: TeamKeys, keys_cache: Any
) -> None:
    with freeze_time(T0):
        made = create(client, team.admin)
        assert ingest(client, made["key"]) == 200
        response = client.delete(f"/api/v1/keys/{made['id']}", headers=auth(team.admin))
        assert response.status_code == 204 and response.data == b""
        assert ingest(client, made["key"]) == 401
        shown = listed(client, team.admin)[made["id"]]
        assert (shown["status"], shown["revoked_at"]) == ("revoked", "2024-03-01T12:00:00Z")
        # Revoking again changes nothing.
        assert client.delete(f"/api/v1/keys/{made['id']}", headers=auth(team.admin)).status_code == 204


def test_an_expiring_key_can_be_revoked_early(client: FlaskClient, team: TeamKeys) -> None:
    old = create(client, team.admin)
    rotate(client, team.admin, old["id"], {"grace_seconds": DAY})
    assert client.delete(f"/api/v1/keys/{old['id']}", headers=auth(team.admin)).status_code == 204
    assert ingest(client, old["key"]) == 401
    assert listed(client, team.admin)[old["id"]]["status"] == "revoked"


def test_only_an_active_key_can_be_rotated(client: FlaskClient, team: TeamKeys) -> None:
    made = create(client, team.admin)
    assert rotate(client, team.admin, made["id"], {"grace_seconds": 60}).status_code == 201
    again = rotate(client, team.admin, made["id"], {"grace_seconds": 60})
    assert again.status_code == 409
    assert again.get_json()["code"] == "key_not_active"
    assert "expiring" in again.get_json()["message"]


def test_revoking_the_last_active_admin_key_is_409(client: FlaskClient, team: TeamKeys) -> None:
    first = admin_key_id(client, team)
    response = client.delete(f"/api/v1/keys/{first}", headers=auth(team.admin))
    assert response.status_code == 409
    assert response.get_json()["code"] == "last_admin_key"
    assert client.get("/api/v1/keys", headers=auth(team.admin)).status_code == 200  # still works

    second = create(client, team.admin, "second admin", ["admin"])
    assert client.delete(f"/api/v1/keys/{first}", headers=auth(second["key"])).status_code == 204
    assert client.delete(f"/api/v1/keys/{second['id']}", headers=auth(second["key"])).status_code == 409


def test_an_expiring_admin_key_does_not_count_as_the_remaining_admin(
    client: FlaskClient, team: TeamKeys
) -> None:
    first = admin_key_id(client, team)
    new = rotate(client, team.admin, first, {"grace_seconds": 3600}).get_json()
    # The old admin key is expiring for an hour, so the new one is the last active admin key.
    response = client.delete(f"/api/v1/keys/{new['id']}", headers=auth(new["key"]))
    assert response.status_code == 409
    assert response.get_json()["code"] == "last_admin_key"
    assert client.delete(f"/api/v1/keys/{first}", headers=auth(new["key"])).status_code == 204


def test_rotating_the_last_admin_key_is_allowed(client: FlaskClient, team: TeamKeys) -> None:
    first = admin_key_id(client, team)
    response = rotate(client, team.admin, first, {"grace_seconds": 0})
    assert response.status_code == 201
    new = response.get_json()
    assert new["scopes"] == ["admin", "ingest", "read"]
    assert client.get("/api/v1/keys", headers=auth(team.admin)).status_code == 401
    assert client.get("/api/v1/keys", headers=auth(new["key"])).status_code == 200


def test_another_teams_key_is_404(client: FlaskClient, team: TeamKeys, other_team: TeamKeys) -> None:
    theirs = create(client, other_team.admin)
    for key_id in (theirs["id"], "999999999999", "abc", "tlk_notAnId"):
        response = client.delete(f"/api/v1/keys/{key_id}", headers=auth(team.admin))
        assert response.status_code == 404
        assert response.get_json()["code"] == "not_found"
        assert "tlk_" not in response.get_json()["message"]
        assert rotate(client, team.admin, key_id, {}).status_code == 404
    assert ingest(client, theirs["key"]) == 200
    assert theirs["id"] not in listed(client, team.admin)


def test_audit_lists_who_did_what_and_when(client: FlaskClient, team: TeamKeys) -> None:
    with freeze_time(T0) as clock:
        made = create(client, team.admin, "Segment", ["ingest"])
        clock.tick(timedelta(minutes=1))
        new = rotate(client, team.admin, made["id"], {"grace_seconds": 600}).get_json()
        clock.tick(timedelta(minutes=1))
        client.delete(f"/api/v1/keys/{made['id']}", headers=auth(team.admin))
    actor = admin_key_id(client, team)

    response = client.get("/api/v1/keys/audit", headers=auth(team.admin))
    assert response.status_code == 200
    entries = response.get_json()["data"]
    newest = [(e["action"], e["key_id"], e["actor"], e["actor_key_id"], e["at"]) for e in entries[:3]]
    assert newest == [
        ("revoke", made["id"], "key", actor, "2024-03-01T12:02:00Z"),
        ("rotate", made["id"], "key", actor, "2024-03-01T12:01:00Z"),
        ("create", made["id"], "key", actor, "2024-03-01T12:00:00Z"),
    ]
    rotation = entries[1]["detail"]
    assert rotation["new_key_id"] == new["id"] and rotation["grace_seconds"] == 600
    assert rotation["prefix"] == made["prefix"] and rotation["new_prefix"] == new["prefix"]
    # The team's own first keys were made outside the API (the CLI and the test fixture).
    assert {e["actor"] for e in entries[3:]} == {"cli"}
    assert made["key"] not in response.get_data(as_text=True)
    assert new["key"] not in response.get_data(as_text=True)


def pages_of(client: FlaskClient, team: TeamKeys, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a key list, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = f"{path}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=auth(team.admin)).get_json()
        pages.append(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def test_lists_page_with_an_opaque_cursor(client: FlaskClient, team: TeamKeys) -> None:
    for n in range(3):
        create(client, team.admin, f"key {n}")
    pages = pages_of(client, team, "/api/v1/keys", 2)
    assert [len(page) for page in pages] == [2, 2, 2]  # a full last page ends the list: no empty page
    assert [key["name"] for page in pages for key in page] == [
        "key 2",
        "key 1",
        "key 0",
        "read",
        "ingest",
        "admin",
    ]
    audit = client.get("/api/v1/keys/audit?limit=200", headers=auth(team.admin)).get_json()["data"]
    audit_pages = pages_of(client, team, "/api/v1/keys/audit", 2)
    assert all(len(page) == 2 for page in audit_pages[:-1]) and len(audit_pages[-1]) in (1, 2)
    assert [entry for page in audit_pages for entry in page] == audit
    for path in ("/api/v1/keys", "/api/v1/keys/audit"):
        bad = client.get(f"{path}?cursor=nonsense", headers=auth(team.admin))
        assert bad.status_code == 400 and bad.get_json()["code"] == "invalid_cursor"
        assert client.get(f"{path}?limit=0", headers=auth(team.admin)).status_code == 400


def test_last_used_at_is_written_about_once_a_minute(
    client: FlaskClient, team: TeamKeys, engine: Engine, keys_cache: Any
) -> None:
    with freeze_time(T0) as clock:
        made = create(client, team.admin)

        def last_used() -> Any:
            return listed(client, team.admin)[made["id"]]["last_used_at"]

        assert last_used() is None
        assert ingest(client, made["key"], "a") == 200
        assert last_used() == "2024-03-01T12:00:00Z"  # the first use is written at once
        clock.tick(timedelta(seconds=30))
        assert ingest(client, made["key"], "b") == 200
        assert last_used() == "2024-03-01T12:00:00Z"  # not a write per request
        clock.tick(timedelta(seconds=31))
        assert ingest(client, made["key"], "c") == 200
        assert last_used() == "2024-03-01T12:01:01Z"


def test_no_secret_after_creation_in_answers_or_logs(
    client: FlaskClient, team: TeamKeys, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []

    def seen(response: Any) -> Any:
        answers.append(response.get_data(as_text=True) + str(response.headers))
        return response

    made = create(client, team.admin, "Segment", ["ingest", "read"])
    rotated = rotate(client, team.admin, made["id"], {"grace_seconds": 0}).get_json()
    with engine.begin() as connection:
        direct = create_key(connection, team.id, "direct", ["read"], datetime.now(UTC))
    secrets = [made["key"], rotated["key"], direct.secret]

    for secret in secrets:
        seen(client.post("/v1/segment", data=json.dumps({**EVENT, "writeKey": secret})))
        seen(client.get("/api/v1/keys", headers=TeamKeys.basic(secret)))
        seen(client.get("/api/v1/customers?q=x", headers=auth(secret)))
        seen(client.delete(f"/api/v1/keys/{secret}", headers=auth(team.admin)))
        seen(post_json(client, "/api/v1/keys", team.admin, {"name": "x", "scopes": [secret]}))
    seen(client.delete(f"/api/v1/keys/{rotated['id']}", headers=auth(team.admin)))
    seen(client.get("/api/v1/keys", headers=auth(rotated["key"])))  # revoked: 401
    seen(client.get("/api/v1/keys", headers=auth(made["key"])))  # expired: 401
    seen(client.get("/api/v1/keys?limit=200", headers=auth(team.admin)))
    seen(client.get("/api/v1/keys/audit?limit=200", headers=auth(team.admin)))

    logs = "\n".join(record.getMessage() for record in caplog.records)
    everything = "\n".join(answers) + logs
    assert "key rotated" in logs  # the operator's log line is there, without the secret
    for secret in secrets:
        for form in (secret, secret[12:], base64.b64encode(f"{secret}:".encode()).decode()):
            assert form not in everything


KEY_ROUTES = "/api/v1/keys"


def test_every_key_route_is_documented_with_its_schemas(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    operations = {
        (path, method): operation
        for path, item in document["paths"].items()
        if path.startswith(KEY_ROUTES)
        for method, operation in item.items()
    }
    assert set(operations) == {
        ("/api/v1/keys", "get"),
        ("/api/v1/keys", "post"),
        ("/api/v1/keys/{key_id}/rotate", "post"),
        ("/api/v1/keys/{key_id}", "delete"),
        ("/api/v1/keys/audit", "get"),
    }
    for operation in operations.values():
        assert "x-undocumented" not in operation and "x-doc-error" not in operation
        assert operation["operationId"] and operation["summary"]
    created = operations[("/api/v1/keys", "post")]["responses"]["201"]["content"]["application/json"]
    assert created["schema"] == {"$ref": "#/components/schemas/ApiKeyCreated"}
    assert "key" in document["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert "key" not in document["components"]["schemas"]["ApiKey"]["properties"]


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(app: Flask, team: TeamKeys) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    client = app.test_client()
    spare = create(client, team.admin, "spare", ["read"])  # a real id, to rotate and revoke
    runs = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(KEY_ROUTES):
            continue
        overrides: list[dict[str, Any]] = [{}]
        if "{key_id}" in operation.path:
            overrides.append({"key_id": spare["id"]})
        for path_parameters in overrides:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters or None
                )
                _check_cases(strategy, auth(team.admin))
                runs += 1
    assert runs == 14
    assert client.get("/api/v1/keys", headers=auth(team.admin)).status_code == 200  # still an admin


def _check_cases(strategy: Any, headers: dict[str, str]) -> None:
    @given(case=strategy)
    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=SCHEMATHESIS_CHECKS)

    check()


def test_an_oversized_body_is_413_and_creates_nothing(client: FlaskClient, team: TeamKeys) -> None:
    body = json.dumps({"name": "x" * 20_000, "scopes": ["read"]}).encode()
    response = client.post("/api/v1/keys", data=body, headers=auth(team.admin))
    assert response.status_code == 413
    assert len(listed(client, team.admin)) == 3  # the team's three keys, nothing new


# --- attacks (issue 13): each failed before the change ----------------------------------


def test_a_rotated_admin_key_keeps_only_ingest_during_its_grace(client: FlaskClient, team: TeamKeys) -> None:
    first = admin_key_id(client, team)
    new = rotate(client, team.admin, first, {"grace_seconds": DAY}).get_json()
    old = team.admin
    assert ingest(client, old, "m-grace") == 200  # what Segment needs, through the grace

    refused = [
        post_json(client, "/api/v1/keys", old, {"name": "mine", "scopes": ["admin"]}),
        client.delete(f"/api/v1/keys/{new['id']}", headers=auth(old)),
        rotate(client, old, new["id"], {"grace_seconds": 0}),
        client.get("/api/v1/keys", headers=auth(old)),
        client.get("/api/v1/keys/audit", headers=auth(old)),
        client.get("/api/v1/customers", headers=auth(old)),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert {r.get_json()["code"] for r in refused} == {"key_expiring"}
    assert "replacement" in refused[0].get_json()["message"]
    keys = listed(client, new["key"])
    assert keys[new["id"]]["status"] == "active" and len(keys) == 4  # nothing made, nothing revoked


def test_the_acting_key_is_checked_in_postgres_not_in_the_cache(
    settings: Any, team: TeamKeys, engine: Engine
) -> None:
    """A key cache that still holds the admin key as usable (here for a minute) does not let
    it act: the change reads the acting key's row in its own transaction."""
    from app import create_app

    slow_cache = create_app({"TESTING": True, "SETTINGS": settings, "KEY_CACHE_TTL": 60.0})
    try:
        client = slow_cache.test_client()
        second = create(client, team.admin, "second admin", ["admin"])
        assert client.get("/api/v1/keys", headers=auth(second["key"])).status_code == 200  # cached
        with engine.begin() as connection:  # revoked by another process
            connection.execute(
                text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": int(second["id"])}
            )
        first = admin_key_id(client, team)
        attempts = [
            post_json(client, "/api/v1/keys", second["key"], {"name": "minted", "scopes": ["admin"]}),
            rotate(client, second["key"], first, {"grace_seconds": 0}),
            client.delete(f"/api/v1/keys/{first}", headers=auth(second["key"])),
        ]
        assert [a.status_code for a in attempts] == [401, 401, 401]
        assert {a.get_json()["code"] for a in attempts} == {"invalid_key"}
        # ...and once refused by Postgres, this process forgets it at once.
        assert client.get("/api/v1/keys", headers=auth(second["key"])).status_code == 401
        keys = listed(client, team.admin)
        assert "minted" not in {k["name"] for k in keys.values()}
        assert keys[first]["status"] == "active"
    finally:
        slow_cache.extensions["timeline"].dispose()


def _arabic_indic(number: str) -> str:
    return "".join(chr(0x0660 + int(digit)) for digit in number)


def test_ids_are_ascii_digits_only(client: FlaskClient, team: TeamKeys) -> None:
    made = create(client, team.admin)
    lookalike = _arabic_indic(made["id"])  # int() reads "٣" as 3
    for path in (f"/api/v1/keys/{lookalike}", "/api/v1/keys/²", "/api/v1/keys/1²", "/api/v1/keys/%C2%B2"):
        response = client.delete(path, headers=auth(team.admin))
        assert response.status_code == 404, path
        assert response.get_json()["code"] == "not_found"
        assert rotate(client, team.admin, path.rsplit("/", 1)[1]).status_code == 404
    assert listed(client, team.admin)[made["id"]]["status"] == "active"


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/keys/audit"])
@pytest.mark.parametrize("limit", ["²", "٣", "1²", "0", "201", "-1", "1e2", " 5", "9" * 40])
def test_a_limit_that_is_not_ascii_digits_in_range_is_400(
    client: FlaskClient, team: TeamKeys, path: str, limit: str
) -> None:
    response = client.get(path, query_string={"limit": limit}, headers=auth(team.admin))
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_limit"


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/keys/audit"])
@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(b"[" * 1500).decode(),
        base64.urlsafe_b64encode(b"k:" + b"9" * 5000).decode(),
        "A" * 100_000,
        "é",
        base64.urlsafe_b64encode("k:٣".encode()).decode(),
    ],
)
def test_a_cursor_of_any_size_or_shape_is_400_without_a_traceback(
    client: FlaskClient, team: TeamKeys, path: str, cursor: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get(path, query_string={"cursor": cursor}, headers=auth(team.admin))
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_cursor"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Segment\u202eorp", "bidirectional"),
        ("\u2066admin\u2069", "bidirectional"),
        ("Seg\u200fment", "bidirectional"),
        ("Segment\nprod", "control"),
        ("Segment\x1b[31m", "control"),
    ],
)
def test_a_key_name_with_control_or_bidi_characters_is_400(
    client: FlaskClient, team: TeamKeys, name: str, said: str
) -> None:
    response = post_json(client, "/api/v1/keys", team.admin, {"name": name, "scopes": ["ingest"]})
    assert response.status_code == 400
    assert said in response.get_json()["message"]
    assert len(listed(client, team.admin)) == 3
