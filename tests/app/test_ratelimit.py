"""Rate limits (issue 13): a batch pays for every event it carries; the read and key routes
have a per-key limit with 429 and Retry-After.

Each test builds its own app with small limits, so the buckets are fresh and the
figures exact; WEB_CONCURRENCY is 1, so this one process enforces the whole limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from store.settings import Settings
from tests.conftest import TeamKeys


@pytest.fixture
def limited_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    made: list[Flask] = []

    def build(**limits: Any) -> Flask:
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, **limits)})
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["timeline"].dispose()


def events(count: int, tag: str) -> list[dict[str, Any]]:
    return [{"type": "track", "userId": "u1", "event": "E", "messageId": f"{tag}-{n}"} for n in range(count)]


def test_a_batch_bigger_than_the_burst_pays_for_every_event(
    limited_app: Callable[..., Flask], team: TeamKeys
) -> None:
    client = limited_app(ingest_rate_limit=100.0, ingest_rate_burst=1000.0).test_client()
    batch = client.post("/v1/batch", json={"batch": events(2500, "big")}, headers=team.basic(team.ingest))
    assert batch.status_code == 200  # a full bucket lets one batch through...
    after = client.post("/v1/track", json=events(1, "after")[0], headers=team.basic(team.ingest))
    assert after.status_code == 429
    assert after.get_json()["code"] == "rate_limited"
    # ...which then owes 1,500 events: at 100 a second, 15 s before the next one fits.
    assert int(after.headers["Retry-After"]) >= 15


def test_a_batch_within_the_burst_passes_and_the_next_waits_its_turn(
    limited_app: Callable[..., Flask], team: TeamKeys
) -> None:
    client = limited_app(ingest_rate_limit=10.0, ingest_rate_burst=100.0).test_client()
    assert (
        client.post(
            "/v1/batch", json={"batch": events(100, "b1")}, headers=team.basic(team.ingest)
        ).status_code
        == 200
    )
    refused = client.post("/v1/batch", json={"batch": events(50, "b2")}, headers=team.basic(team.ingest))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 6


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/keys/audit", "/api/v1/customers"])
def test_read_and_key_routes_have_a_per_key_limit_with_retry_after(
    limited_app: Callable[..., Flask], team: TeamKeys, other_team: TeamKeys, path: str
) -> None:
    client = limited_app(api_rate_limit=0.5, api_rate_burst=3.0).test_client()
    secret = team.admin if "keys" in path else team.read
    answers = [client.get(path, headers=team.bearer(secret)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].get_json()["code"] == "rate_limited"
    assert int(answers[-1].headers["Retry-After"]) == 2  # one request at 0.5 a second
    # The limit is per key: another key (here another team's) is not slowed down.
    other = other_team.admin if "keys" in path else other_team.read
    assert client.get(path, headers=other_team.bearer(other)).status_code == 200


def test_a_key_change_pays_the_key_limit_too(limited_app: Callable[..., Flask], team: TeamKeys) -> None:
    client = limited_app(api_rate_limit=0.5, api_rate_burst=1.0).test_client()
    body = {"name": "Segment", "scopes": ["ingest"]}
    assert client.post("/api/v1/keys", json=body, headers=team.bearer(team.admin)).status_code == 201
    refused = client.post("/api/v1/keys", json=body, headers=team.bearer(team.admin))
    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_ingest_does_not_pay_the_key_limit(limited_app: Callable[..., Flask], team: TeamKeys) -> None:
    client = limited_app(api_rate_limit=0.5, api_rate_burst=1.0).test_client()
    statuses = {
        client.post("/v1/track", json=event, headers=team.basic(team.ingest)).status_code
        for event in events(5, "free")
    }
    assert statuses == {200}


def test_zero_turns_the_key_limit_off(limited_app: Callable[..., Flask], team: TeamKeys) -> None:
    client = limited_app(api_rate_limit=0.0, api_rate_burst=1.0).test_client()
    assert {client.get("/api/v1/keys", headers=team.bearer(team.admin)).status_code for _ in range(5)} == {
        200
    }
