"""A team sees only its own data: every API route, given another team's ids, answers 404.

The routes are walked from the app's URL map, so a route added later is covered or makes
this test fail until someone says which of team B's ids belongs in its path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from store.events import store_events
from tests.conftest import TeamKeys
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
BODY_METHODS = {"POST", "PUT", "PATCH"}


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, *events: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


@pytest.fixture
def team_b_ids(engine: Engine, other_team: TeamKeys) -> dict[str, list[str]]:
    """Team B's ids of each kind: a live and a merged-away customer, a group, a key."""
    send(
        engine,
        other_team,
        {"type": "identify", "userId": "b-user", "anonymousId": "b-anon", "timestamp": at(0),
         "messageId": "b1", "traits": {"email": "b@team-b.test", "name": "Bea"}},
        {"type": "group", "userId": "b-user", "groupId": "b-group", "timestamp": at(1), "messageId": "b2"},
        {"type": "track", "userId": "b-other", "event": "X", "timestamp": at(2), "messageId": "b3"},
    )  # fmt: skip
    send(
        engine,
        other_team,
        {"type": "alias", "previousId": "b-user", "userId": "b-other", "timestamp": at(3), "messageId": "b4"},
    )
    with engine.connect() as connection:
        customers = connection.execute(
            text("SELECT id FROM customers WHERE team_id = :t ORDER BY merged_into NULLS FIRST"),
            {"t": other_team.id},
        ).scalars()
        keys = connection.execute(
            text("SELECT id FROM api_keys WHERE team_id = :t ORDER BY id"), {"t": other_team.id}
        ).scalars()
        events = connection.execute(
            text("SELECT id FROM events WHERE team_id = :t ORDER BY id LIMIT 1"), {"t": other_team.id}
        ).scalars()
        return {
            "customer": [str(c) for c in customers],  # the survivor, then the merged-away one
            "group": ["b-group"],
            "key": [str(k) for k in keys],
            "item": [str(e) for e in events],
        }


def ids_for(rule: str, argument: str, ids: dict[str, list[str]]) -> list[str]:
    """Which of team B's ids go in `<argument>` of `rule`."""
    if argument == "customer_id":
        return ids["customer"]
    if argument == "group_id":
        return ids["group"]
    if argument == "item_id":
        return ids["item"]
    if rule.startswith("/api/v1/keys/"):
        return ids["key"]
    raise AssertionError(f"{rule}: say here which of team B's ids goes in <{argument}>")


def routes_with_ids(app: Flask, ids: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(method, url) for each API route with an id in its path, filled with team B's ids."""
    calls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or not rule.arguments:
            continue
        arguments = sorted(rule.arguments)
        for values in product(*(ids_for(rule.rule, argument, ids) for argument in arguments)):
            url = rule.rule
            for argument, value in zip(arguments, values, strict=True):
                url = url.replace(f"<{argument}>", quote(value, safe="")).replace(
                    f"<path:{argument}>", quote(value, safe="")
                )
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                calls.append((method, url))
    return calls


def test_every_route_answers_404_for_another_teams_ids(
    app: Flask, client: FlaskClient, team: TeamKeys, other_team: TeamKeys, team_b_ids: dict[str, list[str]]
) -> None:
    calls = routes_with_ids(app, team_b_ids)
    assert {url.split("/")[3] for _, url in calls} >= {"customers", "groups", "keys"}
    admin_a = team.bearer(team.admin)  # every scope: a 403 cannot hide a leak
    for method, url in calls:
        body = {"grace_seconds": 0} if method in BODY_METHODS else None
        response = client.open(url, method=method, headers=admin_a, json=body)
        assert response.status_code == 404, f"{method} {url}: {response.status_code} {response.get_data()!r}"
        assert response.get_json()["code"] == "not_found"
    # Team B's keys were neither rotated nor revoked.
    listed = client.get("/api/v1/keys", headers=other_team.bearer(other_team.admin)).get_json()["data"]
    assert {key["status"] for key in listed} == {"active"}
    assert len(listed) == len(team_b_ids["key"])


@pytest.mark.parametrize(
    "query", ["user_id=b-user", "user_id=b-other", "anonymous_id=b-anon", "email=b@team-b.test"]
)
def test_lookup_does_not_find_another_teams_customer(
    client: FlaskClient, team: TeamKeys, team_b_ids: dict[str, list[str]], query: str
) -> None:
    response = client.get(f"/api/v1/customers/lookup?{query}", headers=team.bearer(team.read))
    assert response.status_code == 404


@pytest.mark.parametrize("q", ["b-user", "b-anon", "b@team", "bea", ""])
def test_search_does_not_list_another_teams_customers(
    client: FlaskClient, team: TeamKeys, team_b_ids: dict[str, list[str]], q: str
) -> None:
    response = client.get(f"/api/v1/customers?q={q}", headers=team.bearer(team.read))
    assert response.status_code == 200
    assert response.get_json() == {"data": [], "next_cursor": None}


def test_team_b_still_reads_its_own(
    client: FlaskClient, other_team: TeamKeys, team_b_ids: dict[str, list[str]]
) -> None:
    read_b = other_team.bearer(other_team.read)
    survivor, merged_away = team_b_ids["customer"]
    assert client.get(f"/api/v1/customers/{survivor}", headers=read_b).status_code == 200
    assert client.get(f"/api/v1/customers/{merged_away}", headers=read_b).status_code == 308
    assert client.get("/api/v1/groups/b-group", headers=read_b).status_code == 200
