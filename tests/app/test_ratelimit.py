"""Rate limits (issue 13): a batch pays for every event it carries; the read and key routes
have a per-key limit with 429 and Retry-After. Ingest budgets (issue 20): refused events
and bytes are charged as well as accepted ones, and a team has a budget of requests.

Each test builds its own app with small limits, so the buckets are fresh and the
figures exact; WEB_CONCURRENCY is 1, so this one process enforces the whole limit. The
last test floods real gunicorn, with the default budgets, as the issue measured it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from app import create_app
from app.errors import ApiError
from app.ingest.ratelimit import RefusalHold, TeamTurns
from service.settings import Settings
from tests.conftest import TeamKeys
from tests.servers import GunicornServer


@pytest.fixture
def limited_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    made: list[Flask] = []

    def build(**limits: Any) -> Flask:
        limits.setdefault("ingest_refusal_hold_seconds", 0.0)  # 429s at once unless a test holds them
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


def test_an_ingest_429_is_held_before_it_is_answered(
    limited_app: Callable[..., Flask], team: TeamKeys
) -> None:
    app = limited_app(ingest_request_limit=0.05, ingest_request_burst=1.0, ingest_refusal_hold_seconds=0.2)
    hold = app.extensions["rate_limits"].refusal_hold
    client = app.test_client()
    assert (
        client.post("/v1/track", json=events(1, "h1")[0], headers=team.basic(team.ingest)).status_code == 200
    )
    assert hold.held == 0  # a stored request is answered at once
    refused = client.post("/v1/track", json=events(1, "h2")[0], headers=team.basic(team.ingest))
    assert refused.status_code == 429 and hold.held == 1 and hold.holding == 0


def test_a_refusal_hold_pauses_429s_only_and_at_most_so_many_at_once() -> None:
    pauses: list[float] = []
    hold = RefusalHold(1.0, most=1, sleep=pauses.append)
    over = ApiError(429, "rate_limited", "Over.", headers={"Retry-After": "3"})
    assert hold.pause(over) == 1.0 and pauses == [1.0]  # Retry-After, at most the hold
    soon = ApiError(429, "rate_limited", "Over.", headers={"Retry-After": "1"})
    hold.seconds = 5.0
    assert hold.pause(soon) == 1.0  # never longer than the client is told to wait
    assert hold.pause(ApiError(400, "invalid_json", "Bad.")) == 0.0  # only 429s
    hold.holding = 1  # one answer held already: the next is answered at once
    assert hold.pause(over) == 0.0 and pauses == [1.0, 1.0]
    assert RefusalHold(0.0).pause(over) == 0.0  # holds off


def test_a_team_has_so_many_ingest_turns_at_once_and_others_are_not_held_by_them() -> None:
    turns = TeamTurns(2, wait=0.05)
    assert turns.enter(7) and turns.enter(7)
    with pytest.raises(ApiError) as refused:  # a third waits its turn, and is refused when none comes
        turns.enter(7)
    assert refused.value.status == 429 and "2 ingest requests in progress" in refused.value.message
    assert turns.enter(8)  # another team has turns of its own
    turns.leave(7)
    assert turns.enter(7)  # a turn given back is taken again
    assert not TeamTurns(0).enter(7)  # 0: no bound, nothing to give back


def test_every_ingest_request_gives_its_turn_back(limited_app: Callable[..., Flask], team: TeamKeys) -> None:
    app = limited_app(ingest_team_concurrency=1)
    client = app.test_client()
    ingest = team.basic(team.ingest)
    answers = [client.post("/v1/track", json=event, headers=ingest) for event in events(3, "t")]
    answers.append(client.post("/v1/track", data=b"{", headers=ingest))  # refused whole: 400
    answers.append(client.post("/v1/track", json=events(1, "t-last")[0], headers=ingest))
    assert [answer.status_code for answer in answers] == [200, 200, 200, 400, 200]
    turns = app.extensions["rate_limits"].team_turns
    assert turns.enter(team.id)  # the one turn is free again
    turns.leave(team.id)


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


# --- Ingest budgets that fit the machine (issue 20): refused events and bytes are charged ---


def refused_events(count: int, size: int = 0) -> list[dict[str, Any]]:
    """Events the Spec refuses (a track without its event name), padded to about `size` bytes."""
    return [
        {"type": "track", "userId": "u1", "messageId": f"bad-{n}", "properties": {"pad": "x" * size}}
        for n in range(count)
    ]


def test_a_flood_of_refused_events_is_answered_429_and_counted_in_the_debugger(
    limited_app: Callable[..., Flask], team: TeamKeys, other_team: TeamKeys
) -> None:
    client = limited_app(ingest_rate_limit=0.05, ingest_rate_burst=20.0).test_client()  # a token per 20 s
    statuses = [
        client.post("/v1/track", json=refused_events(1)[0], headers=team.basic(team.ingest)).status_code
        for _ in range(40)
    ]
    assert statuses[:20] == [400] * 20  # the burst, each refused for its content...
    assert set(statuses[20:]) == {429}  # ...then the team is over its budget: nothing more is parsed
    # Bad JSON with a valid key is charged too, and is answered 429 as well now.
    bad_json = client.post("/v1/segment", data=b"{not json", headers=team.basic(team.ingest))
    assert bad_json.status_code == 429 and int(bad_json.headers["Retry-After"]) >= 1
    assert "refused events count too" in bad_json.get_json()["message"]
    # Another team's budget is its own.
    assert (
        client.post(
            "/v1/track", json=events(1, "o")[0], headers=other_team.basic(other_team.ingest)
        ).status_code
        == 200
    )
    summary = client.get("/api/v1/ingest/summary", headers=team.bearer(team.read)).get_json()["last_24h"]
    assert summary["refused_by_code"]["rate_limited"]["request"] == 21
    assert summary["refused"] == 41


def test_refused_events_in_a_stored_batch_are_charged_as_well_as_the_stored_ones(
    limited_app: Callable[..., Flask], team: TeamKeys
) -> None:
    client = limited_app(ingest_rate_limit=0.05, ingest_rate_burst=100.0).test_client()  # a token per 20 s
    mixed = events(10, "good") + refused_events(90)
    answer = client.post("/v1/batch", json={"batch": mixed}, headers=team.basic(team.ingest))
    assert answer.status_code == 200 and answer.get_json()["accepted"] == 10
    after = client.post("/v1/track", json=events(1, "after")[0], headers=team.basic(team.ingest))
    assert after.status_code == 429  # 100 events paid, not 10


def test_accepted_and_refused_bytes_are_both_charged(
    limited_app: Callable[..., Flask], team: TeamKeys, other_team: TeamKeys
) -> None:
    budget = {"ingest_rate_limit": 0.0, "ingest_byte_limit": 100.0, "ingest_byte_burst": 21_000.0}
    client = limited_app(**budget).test_client()
    padded = refused_events(1, size=4000)[0]
    refused = [
        client.post("/v1/track", json=padded, headers=team.basic(team.ingest)).status_code for _ in range(6)
    ]
    assert refused[:5] == [400] * 5 and refused[5] == 429  # 5 x 4 KB refused: the 20 KB burst is spent
    accepted = {**events(1, "big")[0], "properties": {"pad": "x" * 4000}}
    answers = [
        client.post(
            "/v1/track",
            json={**accepted, "messageId": f"big-{n}"},
            headers=other_team.basic(other_team.ingest),
        )
        for n in range(6)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429]  # accepted bytes pay the same budget
    assert "bytes of body" in answers[-1].get_json()["message"]


def test_a_team_has_a_budget_of_requests_on_ingest(limited_app: Callable[..., Flask], team: TeamKeys) -> None:
    client = limited_app(ingest_request_limit=0.05, ingest_request_burst=3.0).test_client()
    statuses = [
        client.post("/v1/track", json=event, headers=team.basic(team.ingest)).status_code
        for event in events(4, "r")
    ]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.slow
def test_the_default_budgets_answer_a_flood_of_refused_32_kib_events_with_429(
    settings: Settings, tmp_path: Path, team: TeamKeys, other_team: TeamKeys
) -> None:
    """The issue's flood: 32 KiB events the Spec refuses, from one public ingest key, as fast
    as one client sends them (in batches of 15, under the 500 KiB body limit)."""
    body = json.dumps({"batch": refused_events(15, size=32 * 1024 - 200)}).encode()
    env: dict[str, str | None] = {"GUNICORN_WORKER_CLASS": None, **dict.fromkeys(BUDGET_VARIABLES)}
    with GunicornServer(tmp_path, env) as server, requests.Session() as flood:
        statuses: list[int] = []
        # Until the first 429: the burst (4 MiB) is 8.5 such bodies, the rate (2 MiB/s) 4.3 a
        # second; the cap, 140 MB, is far more than any machine parses under that rate.
        while len(statuses) < 300 and 429 not in statuses:
            answer = flood.post(
                f"{server.url}/v1/batch", data=body, headers=team.basic(team.ingest), timeout=10
            )
            statuses.append(answer.status_code)
        assert statuses[-1] == 429, f"{len(statuses)} refused batches of 15 x 32 KiB, never a 429"
        assert set(statuses[:-1]) == {400}  # refused for their content until then
        assert "bytes of body" in answer.json()["message"] and int(answer.headers["Retry-After"]) >= 1
        other = requests.post(
            f"{server.url}/v1/track",
            json=events(1, "quiet")[0],
            headers=other_team.basic(other_team.ingest),
            timeout=10,
        )
        assert other.status_code == 200


BUDGET_VARIABLES = [
    f"INGEST_{name}_{kind}" for name in ("RATE", "REQUEST", "BYTE") for kind in ("LIMIT", "BURST")
]
