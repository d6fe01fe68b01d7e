"""Whatever a client puts in `Authorization`, an authenticated route answers 401, never a 500
(issue 13: `Basic éééé` was a 500 on every route); and what each scope may do.

The routes are read from the app's URL map, so a new route is covered without editing
this file.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.openapi import is_api_endpoint
from tests.conftest import TeamKeys

OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/static/<path:filename>"}


def authenticated_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, path) of every route that needs a key, path parameters filled with 1."""
    routes = []
    for rule in app.url_map.iter_rules():
        # The console signs agents in with a cookie (tests/app/test_console.py), not a header.
        if rule.rule in OPEN_ROUTES or not is_api_endpoint(rule.endpoint):
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<{argument}>", "1").replace(f"<path:{argument}>", "1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def call(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> Any:
    body = b'{"type": "track", "userId": "u", "event": "E"}' if method == "POST" else None
    return client.open(
        path, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
    )


JUNK_AUTHORIZATION = [
    "Basic éééé",
    "Basic " + "é" * 5000,
    "Basic ÿ\x7f\x80",
    "Basic " + base64.b64encode("é:".encode("latin-1")).decode(),  # decodes, but not UTF-8
    "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
    "Basic =",
    "Basic ====",
    "Basic " + base64.b64encode(b":").decode(),
    "Basic " + base64.b64encode(("tlk_" + "é" * 32 + ":").encode()).decode(),
    "Bearer éééé",
    "Bearer tlk_" + "A" * 31,
    "Bearer tlk_" + "A" * 33,
    "Bearer tlk_" + "A" * 31 + "é",
    "Bearer " + "x" * 10_000,
    "Bearer \x00",
    "Digest éé",
    "éééé",
    "Basic",
    "Bearer",
]


def test_every_authenticated_route_is_covered(app: Flask) -> None:
    paths = {path for _, path in authenticated_routes(app)}
    assert {"/v1/segment", "/api/v1/customers/1/feed", "/api/v1/keys/1/rotate", "/api/v1/groups/1"} <= paths


@pytest.mark.parametrize("header", JUNK_AUTHORIZATION)
def test_any_authorization_value_is_401_on_every_authenticated_route(
    app: Flask, client: FlaskClient, header: str
) -> None:
    answers = {}
    for method, path in authenticated_routes(app):
        response = call(client, method, path, {"Authorization": header})
        answers[(method, path)] = (response.status_code, (response.get_json(silent=True) or {}).get("code"))
    assert {status for status, _ in answers.values()} == {401}, answers
    assert {code for _, code in answers.values()} <= {"invalid_key", "missing_key"}


def test_an_expiring_key_keeps_only_ingest(client: FlaskClient, team: TeamKeys) -> None:
    made = client.post(
        "/api/v1/keys", json={"name": "all", "scopes": ["ingest", "read"]}, headers=team.bearer(team.admin)
    ).get_json()
    rotated = client.post(f"/api/v1/keys/{made['id']}/rotate", json={}, headers=team.bearer(team.admin))
    assert rotated.status_code == 201
    event = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-auth-grace"}
    assert client.post("/v1/segment", json=event, headers=team.basic(made["key"])).status_code == 200
    read = client.get("/api/v1/customers", headers=team.bearer(made["key"]))
    assert read.status_code == 403 and read.get_json()["code"] == "key_expiring"
    fresh = rotated.get_json()["key"]
    assert client.get("/api/v1/customers", headers=team.bearer(fresh)).status_code == 200
