"""Ingest when something is wrong around it: Postgres down, Redis down or flushed, a team over its limit.

SPEC §1: a 2xx only for what is committed in Postgres; Postgres down is a 503 with
Retry-After (Segment retries); Redis down is still a 200, and the sweep queues the
stored-but-unfolded events once Redis is back. The Redis that dies here is our own
embedded server, never the shared one; "Postgres down" is an app pointed at a closed port.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import Engine

from app import create_app
from devstack.embedded import EmbeddedRedis, free_port
from service.fold_queue import FoldQueue
from service.settings import Settings
from store.apikeys import KeyCache
from tests.app.test_ingest import post, stored, track
from tests.conftest import TeamKeys
from workers.sweep import sweep

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(settings: Settings) -> Iterator[AppFactory]:
    """Apps built like production's, with some settings changed; disposed afterwards."""
    built: list[Flask] = []

    def build(**changes: Any) -> Flask:
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, **changes)})
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["timeline"].dispose()
        app.extensions["timeline"].redis.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own, which it may stop, start and flush."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def dead_database_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"


# --- Postgres unavailable ------------------------------------------------------------------------


def test_postgres_unavailable_is_503_with_retry_after(make_app: AppFactory, team: TeamKeys) -> None:
    client = make_app(database_url=dead_database_url()).test_client()
    response = post(client, track("m1"), team.basic(team.ingest))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert body["code"] == "storage_unavailable"
    assert "nothing was stored" in body["message"] and "Retry" in body["message"]


def test_postgres_lost_after_the_key_was_checked_is_503_and_a_retry_stores_once(
    make_app: AppFactory, client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    broken = make_app(database_url=dead_database_url())
    broken.extensions["timeline"].keys = KeyCache(engine)  # the key is known; the insert fails
    batch = {"batch": [track("m1"), track("m2")]}
    failed = post(broken.test_client(), batch, team.basic(team.ingest), "/v1/batch")
    assert failed.status_code == 503
    assert "Retry-After" in failed.headers
    assert stored(engine, team.id) == []
    retried = post(client, batch, team.basic(team.ingest), "/v1/batch")  # Segment's retry
    assert retried.get_json()["accepted"] == 2
    assert len(stored(engine, team.id)) == 2


# --- Redis unavailable ---------------------------------------------------------------------------


def fold_with(redis_url: str, settings: Settings, engine: Engine) -> list[int]:
    """What the worker process does once Redis is back: sweep, then run the queued folds."""
    redis = Redis.from_url(redis_url)
    try:
        teams = sweep(engine, FoldQueue.from_settings(redis, settings))
        SimpleWorker([Queue(settings.fold_queue, connection=redis)], connection=redis).work(
            burst=True, logging_level="WARNING"
        )
        return teams
    finally:
        redis.close()


def feed_message_ids(client: FlaskClient, team: TeamKeys, user_id: str) -> list[str]:
    read = team.bearer(team.read)
    found = client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=read)
    if found.status_code == 404:
        return []
    feed = client.get(f"/api/v1/customers/{found.get_json()['id']}/feed?limit=200", headers=read)
    return sorted(item["message_id"] for item in feed.get_json()["data"])


def test_redis_down_ingest_still_answers_200_and_the_sweep_folds_each_event_once(
    make_app: AppFactory, own_redis: EmbeddedRedis, team: TeamKeys, engine: Engine
) -> None:
    app = make_app(redis_url=own_redis.url)
    settings = app.extensions["timeline"].settings
    client = app.test_client()
    headers = team.basic(team.ingest)
    assert post(client, track("before"), headers).status_code == 200  # its fold job is queued...
    own_redis.stop()  # ...and lost with the server, which keeps nothing on disk

    answers = [
        post(client, track("down-1"), headers),
        post(client, {"batch": [track("down-2"), track("down-3")]}, headers, "/v1/batch"),
        post(client, {"userId": "u1", "event": "Via route", "messageId": "down-4"}, headers, "/v1/track"),
        post(client, track("down-1"), headers),  # a re-send while Redis is down
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert feed_message_ids(client, team, "u1") == []  # stored, not folded yet

    own_redis.start()
    assert team.id in fold_with(own_redis.url, settings, engine)
    expected = ["before", "down-1", "down-2", "down-3", "down-4"]
    assert feed_message_ids(client, team, "u1") == expected

    assert team.id not in fold_with(own_redis.url, settings, engine)  # nothing left to sweep
    assert feed_message_ids(client, team, "u1") == expected


def test_flushed_redis_loses_no_event(
    make_app: AppFactory, own_redis: EmbeddedRedis, team: TeamKeys, engine: Engine
) -> None:
    app = make_app(redis_url=own_redis.url)
    client = app.test_client()
    assert post(client, track("m1"), team.basic(team.ingest)).status_code == 200
    Redis.from_url(own_redis.url).flushall()  # our own server: the queued fold and its flag are gone
    assert post(client, track("m2"), team.basic(team.ingest)).status_code == 200
    fold_with(own_redis.url, app.extensions["timeline"].settings, engine)
    assert feed_message_ids(client, team, "u1") == ["m1", "m2"]


def test_unreachable_redis_never_fails_ingest(make_app: AppFactory, team: TeamKeys, engine: Engine) -> None:
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    answers = [post(client, track(f"m{n}"), team.basic(team.ingest)).status_code for n in range(5)]
    assert answers == [200] * 5
    assert len(stored(engine, team.id)) == 5


# --- rate limit ----------------------------------------------------------------------------------


@pytest.fixture
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")  # the limiter divides the limit among processes


@pytest.mark.usefixtures("one_process")
def test_team_over_its_rate_limit_gets_429_with_retry_after_and_nothing_stored(
    make_app: AppFactory, team: TeamKeys, other_team: TeamKeys, engine: Engine
) -> None:
    client = make_app(ingest_rate_limit=2.0, ingest_rate_burst=3.0).test_client()
    allowed = post(client, {"batch": [track("m1"), track("m2"), track("m3")]}, team.basic(team.ingest))
    assert allowed.status_code == 200
    limited = post(client, track("m4"), team.basic(team.ingest))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    body = limited.get_json()
    assert body["code"] == "rate_limited"
    assert "Retry after" in body["message"]
    assert sorted(r.message_id for r in stored(engine, team.id)) == ["m1", "m2", "m3"]
    # The limit is per team: another team is not slowed by this one.
    assert post(client, track("m1"), other_team.basic(other_team.ingest)).status_code == 200


@pytest.mark.usefixtures("one_process")
def test_rate_limit_of_zero_turns_it_off(make_app: AppFactory, team: TeamKeys) -> None:
    client = make_app(ingest_rate_limit=0.0, ingest_rate_burst=0.0).test_client()
    body = {"batch": [track(f"m{n}") for n in range(100)]}
    assert [post(client, body, team.basic(team.ingest)).status_code for _ in range(5)] == [200] * 5


def test_default_rate_limit_lets_the_largest_batch_through_at_once(settings: Settings) -> None:
    # A quarter of what the deployment stores and folds (docs/rate-limits.md, issue 20), with
    # a burst that takes Segment's largest batch (2,500 events) whole.
    assert settings.ingest_rate_limit >= 2_000 and settings.ingest_rate_burst >= 2_500


@pytest.mark.usefixtures("one_process")
def test_requests_are_json_even_when_the_limit_is_hit(make_app: AppFactory, team: TeamKeys) -> None:
    client = make_app(ingest_rate_limit=1.0, ingest_rate_burst=1.0).test_client()
    post(client, track("m1"), team.basic(team.ingest))
    response = client.post("/v1/segment", data=json.dumps(track("m2")), headers=team.basic(team.ingest))
    assert response.status_code == 429
    assert response.headers["Content-Type"] == "application/json"
