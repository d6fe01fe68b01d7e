"""Issue 21, the Python side: analytics.js's short routes, CORS on the ingest routes only, the
browser-key rule, top-level arrays as batches (Segment's Webhook destination), and the
per-event `status` of a batch answer (SPEC §2). The real browser is tests/app/test_browser_sdk.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app import create_app
from app.ingest.cors import MAX_AGE_SECONDS
from app.ingest.lane import SHORT_ROUTES
from devstack.embedded import free_port
from schemas.batch import MAX_BATCH_EVENTS
from service.settings import Settings
from tests.app.test_ingest import post, stored, track
from tests.conftest import TeamKeys

ORIGIN = "https://shop.example.com"
BROWSER = {"Origin": ORIGIN}
ACAO = "Access-Control-Allow-Origin"
INGEST_PATHS = [
    "/v1/segment",
    "/v1/batch",
    "/v1/import",
    *(f"/v1/{kind}" for kind in SHORT_ROUTES.values()),
    "/v1/b",
    *(f"/v1/{short}" for short in SHORT_ROUTES),
    "/v1/m",
]
# What each type needs beyond its type (SPEC §2), for a valid event of that type.
FIELDS: dict[str, dict[str, Any]] = {
    "track": {"userId": "u1", "event": "Signed Up"},
    "page": {"userId": "u1", "name": "Home"},
    "screen": {"userId": "u1", "name": "Home"},
    "identify": {"userId": "u1", "traits": {"plan": "pro"}},
    "group": {"userId": "u1", "groupId": "g1"},
    "alias": {"userId": "u1", "previousId": "anon-1"},
}


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    built: list[Flask] = []

    def build(**changes: Any) -> Flask:
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, **changes)})
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["timeline"].engine.dispose()


# --- the short routes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("short", "kind"), sorted(SHORT_ROUTES.items()))
def test_each_short_route_stores_its_type_as_its_long_twin_does(
    client: FlaskClient, team: TeamKeys, engine: Engine, short: str, kind: str
) -> None:
    body = {**FIELDS[kind], "messageId": f"short-{kind}"}  # analytics.js sends the type too
    response = post(client, {**body, "type": kind}, {**team.basic(team.ingest), **BROWSER}, f"/v1/{short}")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"success": True}
    twin = post(client, {**body, "messageId": f"long-{kind}"}, team.basic(team.ingest), f"/v1/{kind}")
    assert twin.status_code == 200
    rows = stored(engine, team.id)
    assert [(r.type, r.message_id) for r in rows] == [(kind, f"short-{kind}"), (kind, f"long-{kind}")]
    assert rows[0].event_name == rows[1].event_name


def test_the_short_batch_route_is_the_tracking_api_batch(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    """analytics.js's batching mode: writeKey in the body, sentAt at the top, a `batch` list."""
    body = {
        "writeKey": team.ingest,
        "sentAt": "2024-03-01T10:00:00.000Z",
        "batch": [track("b1"), {"type": "page", "userId": "u1", "messageId": "b2"}, {"type": "track"}],
    }
    response = post(client, body, BROWSER, "/v1/b")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert (answer["accepted"], [r["index"] for r in answer["rejected"]]) == (2, [2])
    assert [r.message_id for r in stored(engine, team.id)] == ["b1", "b2"]


def test_a_per_type_route_given_an_array_says_to_use_the_batch_route(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    for path in ("/v1/track", "/v1/t"):
        response = post(client, [track("m1")], team.basic(team.ingest), path)
        assert response.status_code == 400
        assert "/v1/batch" in response.get_json()["message"]
    assert stored(engine, team.id) == []


# --- CORS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", INGEST_PATHS)
def test_a_preflight_allows_post_with_the_requested_headers(client: FlaskClient, path: str) -> None:
    response = client.options(
        path,
        headers={
            **BROWSER,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert response.status_code == 204
    assert response.headers[ACAO] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert 600 <= int(response.headers["Access-Control-Max-Age"]) == MAX_AGE_SECONDS


def test_a_preflight_echoes_only_header_names(client: FlaskClient) -> None:
    junk = "authorization, bad header, x:y, " + ", ".join(f"x-{n}" for n in range(100))
    response = client.options("/v1/t", headers={**BROWSER, "Access-Control-Request-Headers": junk})
    allowed = [h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")]
    assert allowed[0] == "authorization" and "bad header" not in allowed and len(allowed) < 40


@pytest.mark.parametrize("path", INGEST_PATHS)
def test_every_ingest_answer_allows_any_origin(client: FlaskClient, team: TeamKeys, path: str) -> None:
    kind = SHORT_ROUTES.get(path.removeprefix("/v1/"), path.removeprefix("/v1/"))
    event = {**FIELDS.get(kind, FIELDS["track"]), "type": kind if kind in FIELDS else "track"}
    body: Any = [event] if path in ("/v1/batch", "/v1/import", "/v1/b") else event
    response = post(client, body, {**team.basic(team.ingest), **BROWSER}, path)
    assert response.status_code == 200, response.get_json()
    assert response.headers[ACAO] == "*"


def test_errors_of_every_kind_carry_the_cors_headers(
    client: FlaskClient, team: TeamKeys, make_app: Callable[..., Flask]
) -> None:
    ingest = {**team.basic(team.ingest), **BROWSER}
    answers = {
        401: post(client, track("m1"), BROWSER, "/v1/t"),
        400: client.post("/v1/t", data=b"{not json", headers=ingest),
        413: client.post("/v1/b", data=b" " * (600 * 1024), headers=ingest),
        405: client.get("/v1/t", headers=BROWSER),
        403: post(client, track("m1"), {**team.basic(team.admin), **BROWSER}, "/v1/t"),
    }
    limited = make_app(ingest_rate_limit=1.0, ingest_rate_burst=1.0).test_client()
    assert post(limited, track("r1"), ingest, "/v1/t").status_code == 200
    answers[429] = post(limited, track("r2"), ingest, "/v1/t")
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    answers[503] = post(make_app(database_url=dead).test_client(), track("m1"), ingest, "/v1/t")
    for status, response in answers.items():
        assert response.status_code == status, (status, response.get_data(as_text=True))
        assert response.headers.get(ACAO) == "*", status
        assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
        if status != 405:
            assert {"message", "code"} <= set(response.get_json())


@pytest.mark.parametrize(
    "path", ["/api/v1/me", "/api/v1/customers/lookup?user_id=u1", "/api/v1/openapi.json", "/console/"]
)
def test_the_read_api_and_the_console_answer_no_cors(client: FlaskClient, team: TeamKeys, path: str) -> None:
    asking = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    preflight = client.options(path, headers={**BROWSER, **asking})
    answer = client.get(path, headers={**team.bearer(team.read), **BROWSER})
    for response in (preflight, answer):
        assert not [name for name in response.headers.keys() if name.lower().startswith("access-control-")]


# --- the browser-key rule -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["admin", "read_and_ingest"])
def test_a_browser_request_with_a_key_that_can_read_or_administer_is_403(
    client: FlaskClient, team: TeamKeys, engine: Engine, which: str
) -> None:
    secret = team.admin if which == "admin" else _key(engine, team, ["ingest", "read"])
    for headers, body in (
        ({**team.basic(secret), **BROWSER}, track("h1")),
        (BROWSER, {**track("w1"), "writeKey": secret}),  # analytics.js's batching puts it in the body
    ):
        response = post(client, body, headers, "/v1/t")
        assert response.status_code == 403
        assert response.get_json()["code"] == "browser_key_not_ingest_only"
        assert "ingest-only key" in response.get_json()["message"]
        assert response.headers[ACAO] == "*"
    assert stored(engine, team.id) == []
    # The same key from a server (no Origin) is taken, as before.
    assert post(client, track("s1"), team.basic(secret), "/v1/t").status_code == 200


def test_an_ingest_only_key_is_taken_from_a_browser(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    assert post(client, track("m1"), {**team.basic(team.ingest), **BROWSER}, "/v1/t").status_code == 200
    assert [r.message_id for r in stored(engine, team.id)] == ["m1"]


def _key(engine: Engine, team: TeamKeys, scopes: list[str]) -> str:
    from datetime import UTC, datetime

    from store.apikeys import create_key

    with engine.begin() as connection:
        return create_key(connection, team.id, "both", scopes, datetime.now(UTC)).secret


# --- top-level arrays (Segment's Webhook destination, batching on) -------------------------------


@pytest.mark.parametrize("path", ["/v1/segment", "/v1/batch", "/v1/import", "/v1/b"])
def test_a_top_level_array_is_a_batch(client: FlaskClient, team: TeamKeys, engine: Engine, path: str) -> None:
    events = [track("a1"), {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "a2"}]
    response = post(client, events, team.basic(team.ingest), path)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "success": True,
        "accepted": 2,
        "duplicates": 0,
        "expired": 0,
        "rejected": [],
    }
    again = post(client, events, team.basic(team.ingest), path)
    assert again.get_json() == {"success": True, "accepted": 0, "duplicates": 2, "expired": 0, "rejected": []}
    assert [(r.type, r.message_id) for r in stored(engine, team.id)] == [("track", "a1"), ("identify", "a2")]


@pytest.mark.parametrize("path", ["/v1/segment", "/v1/batch"])
def test_a_refused_event_of_an_array_spoils_no_other(
    client: FlaskClient, team: TeamKeys, engine: Engine, path: str
) -> None:
    big = track("big", properties={"blob": "x" * (33 * 1024)})
    events = [track("ok1"), {"type": "track", "userId": "u1", "messageId": "no-event"}, big, track("ok2")]
    response = post(client, events, team.basic(team.ingest), path)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["messageId"], r["status"]) for r in answer["rejected"]] == [
        (1, "no-event", 400),
        (2, "big", 413),
    ]
    assert [r.message_id for r in stored(engine, team.id)] == ["ok1", "ok2"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ([], 400, "empty"),
        ([{"type": "track", "userId": "u1"}], 400, "Every event"),
        ([{"type": "page", "userId": "u"}] * (MAX_BATCH_EVENTS + 1), 413, str(MAX_BATCH_EVENTS)),
    ],
)
def test_an_array_keeps_every_batch_rule(
    client: FlaskClient, team: TeamKeys, engine: Engine, body: Any, status: int, fragment: str
) -> None:
    response = post(client, body, team.basic(team.ingest), "/v1/segment")
    assert response.status_code == status
    assert fragment in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_an_array_over_the_request_size_is_413(client: FlaskClient, team: TeamKeys) -> None:
    events = [track(f"s{n}", properties={"blob": "x" * (20 * 1024)}) for n in range(30)]
    response = client.post("/v1/segment", data=json.dumps(events), headers=team.basic(team.ingest))
    assert response.status_code == 413
    assert "500 KiB" in response.get_json()["message"]


def test_an_array_has_no_batch_level_context_to_merge(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    events = [track("c1", context={"ip": "10.0.0.1"}), track("c2")]
    assert post(client, events, team.basic(team.ingest)).status_code == 200
    rows = stored(engine, team.id)
    assert rows[0].raw["context"] == {"ip": "10.0.0.1"} and "context" not in rows[1].raw


# --- per-event results --------------------------------------------------------------------------


def test_each_refused_event_carries_the_status_it_would_get_alone(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    """What an Actions destination turns into a per-event multi-status without guessing."""
    refused: list[Any] = [
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        track("big", properties={"blob": "x" * (33 * 1024)}),
        {"type": "merge", "userId": "u1", "messageId": "odd-type"},
        "not an event",
    ]
    batch = [track("ok"), *refused]
    answer = post(client, {"batch": batch}, team.basic(team.ingest), "/v1/batch").get_json()
    alone = [post(client, event, team.basic(team.ingest), "/v1/segment") for event in refused]
    assert [r["index"] for r in answer["rejected"]] == [1, 2, 3, 4]
    for entry, single in zip(answer["rejected"], alone, strict=True):
        assert entry["status"] == single.status_code, entry
        assert entry["message"] == single.get_json()["message"]
        assert "\n" not in entry["message"] and entry["errors"]
        assert set(entry) == {"index", "messageId", "errors", "message", "status"}
    assert [r.message_id for r in stored(engine, team.id)] == ["ok"]


def test_analytics_js_usage_counters_are_taken_and_dropped(client: FlaskClient, engine: Engine) -> None:
    """analytics.js posts its own counters to apiHost + /m, with no key: 200, nothing stored."""
    series = {"series": [{"type": "Counter", "metric": "analytics_js.invoke.track", "value": 1, "tags": {}}]}
    headers = {**BROWSER, "Content-Type": "text/plain"}
    response = client.post("/v1/m", data=json.dumps(series), headers=headers)
    assert response.status_code == 200
    assert response.headers[ACAO] == "*"
