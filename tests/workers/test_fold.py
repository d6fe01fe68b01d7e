"""The fold, end to end through RQ: events in, a customer's timeline out."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from tests.conftest import TeamKeys, load_fixture


def post(client: FlaskClient, team: TeamKeys, body: dict[str, Any]) -> None:
    response = client.post("/v1/segment", data=json.dumps(body), headers=team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()


def test_fixtures_fold_into_the_customers_timeline(client: FlaskClient, team: TeamKeys, fold: Any) -> None:
    for name in (
        "identify-partner-doc.json",
        "track-spec-doc.json",
        "page-partner-doc.json",
        "screen-spec-doc.json",
        "group-spec-doc.json",
    ):
        post(client, team, load_fixture(name))
    fold()
    read = team.bearer(team.read)
    found = client.get("/api/v1/customers/lookup?user_id=97980cfea0067", headers=read)
    assert found.status_code == 200, found.get_json()
    profile = found.get_json()
    assert profile["user_ids"] == ["97980cfea0067"]
    assert [g["id"] for g in profile["groups"]] == ["0e8c78ea9d97a7b8185e8632"]
    assert profile["groups"][0]["name"] == "Initech"
    feed = client.get(f"/api/v1/customers/{profile['id']}/feed?order=asc", headers=read).get_json()
    assert [item["type"] for item in feed["data"]] == ["group", "screen", "page"]
    times = [item["timestamp"] for item in feed["data"]]
    assert times == sorted(times)
    assert feed["next_cursor"] is None
    newest_first = client.get(f"/api/v1/customers/{profile['id']}/feed", headers=read).get_json()
    assert [i["id"] for i in newest_first["data"]] == [i["id"] for i in reversed(feed["data"])]


def test_identify_traits_reach_the_profile(client: FlaskClient, team: TeamKeys, fold: Any) -> None:
    post(client, team, load_fixture("identify-partner-doc.json"))
    fold()
    profile = client.get("/api/v1/customers/lookup?user_id=5678", headers=team.bearer(team.read)).get_json()
    assert profile["email"] == "john.doe@email.com"
    assert profile["name"] == "John Doe"
    assert profile["traits"]["plan"] == "premium"
    assert profile["anonymous_ids"] == ["1234"]
    assert profile["event_count"] == 1


def test_feed_pages_with_a_cursor(client: FlaskClient, team: TeamKeys, fold: Any) -> None:
    for n in range(5):
        post(
            client,
            team,
            {
                "type": "track",
                "userId": "pager",
                "event": f"Step {n}",
                "messageId": f"m{n}",
                "timestamp": f"2024-03-01T12:00:0{n}Z",
            },
        )
    fold()
    read = team.bearer(team.read)
    customer = client.get("/api/v1/customers/lookup?user_id=pager", headers=read).get_json()["id"]
    seen: list[str] = []
    url = f"/api/v1/customers/{customer}/feed?limit=2"
    while url:
        page = client.get(url, headers=read).get_json()
        seen += [item["event"] for item in page["data"]]
        url = (
            f"/api/v1/customers/{customer}/feed?limit=2&cursor={page['next_cursor']}"
            if page["next_cursor"]
            else ""
        )
    assert seen == [f"Step {n}" for n in reversed(range(5))]


def test_unknown_customer_is_404(client: FlaskClient, team: TeamKeys) -> None:
    response = client.get("/api/v1/customers/lookup?user_id=nobody", headers=team.bearer(team.read))
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"
