"""`GET /api/v1/openapi.json`: every route is in it, and the read API keeps its word.

The schemathesis run generates requests from the document (valid and invalid ones) and
sends them to the app in-process with a read key of a team that has folded data; every
answer must be documented, match its schema, and never be a 5xx.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
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

from app.openapi import is_api_endpoint, openapi_path
from schemas.segment import prepare_event
from store.events import store_events
from tests.conftest import TeamKeys
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
OWN_ROUTES = ("/api/v1/customers", "/api/v1/groups", "/api/v1/openapi.json", "/api/v1/me")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.get_json()
    return found


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_route_of_the_app_is_in_the_document(app: Flask, client: FlaskClient) -> None:
    doc = document(client)
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, method, _ in operations(doc)}
    for rule in app.url_map.iter_rules():
        if not is_api_endpoint(rule.endpoint):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (openapi_path(rule.rule), method) in documented, f"{method} {rule.rule} is missing"


def test_no_docstring_is_broken(client: FlaskClient) -> None:
    broken = [
        f"{method.upper()} {path}: {operation['x-doc-error']}"
        for path, method, operation in operations(document(client))
        if "x-doc-error" in operation
    ]
    assert broken == []


def test_the_read_api_is_fully_documented(client: FlaskClient) -> None:
    own = [(p, m, op) for p, m, op in operations(document(client)) if p.startswith(OWN_ROUTES)]
    # with /customers/{id}/groups and /feed/{item_id} (issue 20), /visits and /stream (issue 24)
    assert len(own) == 14
    for path, _, operation in own:
        assert "x-undocumented" not in operation, path
        assert operation["operationId"] and operation["summary"]
        assert "200" in operation["responses"], path


def test_every_reference_names_a_component(client: FlaskClient) -> None:
    doc = document(client)

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [value["$ref"]] if "$ref" in value else [ref for v in value.values() for ref in refs(v)]
        return [ref for v in value for ref in refs(v)] if isinstance(value, list) else []

    components = {
        f"#/components/{kind}/{name}" for kind, named in doc["components"].items() for name in named
    }
    assert sorted(set(refs(doc)) - components) == []
    group = doc["paths"]["/api/v1/groups/{group_id}"]["get"]["responses"]["200"]
    assert group["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Group"}


def test_a_feed_item_documents_the_locale_its_context_carries(client: FlaskClient) -> None:
    # One Field in store/answers/feed_item.py (FEED_CONTEXT) puts it in the document too.
    context = document(client)["components"]["schemas"]["FeedContext"]
    assert context["properties"]["locale"] == {
        "type": "string",
        "nullable": True,
        "description": "The language the customer's device or browser uses, e.g. `en-US`: "
        "the one to answer in.",
    }
    assert "locale" in context["required"]
    assert list(context["properties"]).index("locale") == list(context["properties"]).index("ip") + 1


def test_list_arguments_repeat_in_the_query_string(client: FlaskClient) -> None:
    feed = document(client)["paths"]["/api/v1/customers/{customer_id}/feed"]["get"]
    types = next(p for p in feed["parameters"] if p.get("name") == "type")
    assert types["schema"]["type"] == "array"
    assert types.get("explode", True) and types.get("style", "form") == "form"


@pytest.fixture
def folded_team(engine: Engine, team: TeamKeys) -> dict[str, str]:
    """A team with a profile, a feed of every type, a group and a merged-away customer."""
    events: list[dict[str, Any]] = [
        {"type": "page", "anonymousId": "v1", "name": "Home", "timestamp": at(0), "messageId": "e0",
         "context": {"page": {"url": "https://x.test/", "title": "Home"}, "userAgent": "UA",
                     "ip": "1.2.3.4"}},
        {"type": "identify", "userId": "u1", "anonymousId": "v1", "timestamp": at(1), "messageId": "e1",
         "traits": {"email": "u1@x.test", "name": "U One", "nested": {"a": [1, None]}}},
        {"type": "group", "userId": "u1", "groupId": "g1", "timestamp": at(2), "messageId": "e2",
         "traits": {"name": "G"}},
        {"type": "screen", "userId": "u1", "name": "Main", "timestamp": at(3), "messageId": "e3"},
        {"type": "track", "userId": "u2", "event": "Paid", "timestamp": at(4), "messageId": "e4",
         "properties": {"total": 1.5}},
    ]  # fmt: skip
    events += [
        {"type": "track", "userId": "u1", "event": f"E{n}", "timestamp": at(10 + n), "messageId": f"t{n}"}
        for n in range(30)
    ]
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)
    alias = {"type": "alias", "previousId": "u1", "userId": "u2", "timestamp": at(5), "messageId": "e5"}
    store_events(engine, team.id, [prepare_event(alias, now)], now)
    fold_until_empty(engine, team.id)
    with engine.connect() as connection:
        live, merged = connection.execute(
            text("SELECT id FROM customers WHERE team_id = :t ORDER BY merged_into NULLS FIRST, id"),
            {"t": team.id},
        ).scalars()
    return {"live": str(live), "merged": str(merged), "group": "g1"}


def test_schemathesis_finds_no_5xx_and_no_answer_that_breaks_the_document(
    app: Flask, team: TeamKeys, folded_team: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    auth = team.bearer(team.read)
    runs = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(OWN_ROUTES):
            continue
        if operation.path.endswith("/stream"):
            continue  # a live stream never ends, so a whole-body call would hang: tests/app/test_stream.py
        overrides: list[dict[str, Any]] = [{}]  # generated ids: mostly 404s
        if "{customer_id}" in operation.path:
            overrides += [
                {"customer_id": folded_team["live"]},
                {"customer_id": folded_team["merged"]},
                {"customer_id": "user_id:u2"},
            ]
        if "{group_id}" in operation.path:
            overrides.append({"group_id": folded_team["group"]})
        for path_parameters in overrides:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters or None
                )
                run_cases(strategy, auth)
                runs += 1
    assert runs >= 20


def run_cases(strategy: Any, auth: dict[str, str]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=auth, checks=CHECKS)

    check()
