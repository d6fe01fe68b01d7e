"""The feed's lane (app/read_api/feed.py `FeedLane`) answers as the Flask view does.

Every request below is sent twice: through the app as served (the lane in front) and
straight to Flask's dispatch behind it; status, body and the headers a client reads
must be the same. The lane's own part is checked too: it answers a plain feed page
without starting Flask's request (no `request_started`), and gives back its place in
the team's expensive-read gate whatever the answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request_started
from flask.testing import FlaskClient
from marshmallow import ValidationError
from sqlalchemy import Engine
from werkzeug.datastructures import MultiDict
from werkzeug.test import Client
from werkzeug.wrappers import Response as PlainResponse

from app.edges import invalid
from app.errors import ApiError
from app.read_api.feed import FeedLane, feed_args
from schemas.api import FeedArgs, query_arguments
from tests.app.test_customers import merged_pair, send, track
from tests.conftest import TeamKeys

_HEADERS = ("Content-Type", "Location", "WWW-Authenticate", "Retry-After")


def _lane(app: Flask) -> FeedLane:
    lane = app.wsgi_app
    assert isinstance(lane, FeedLane)
    return lane


def _both(app: Flask, url: str, headers: dict[str, str]) -> tuple[Any, Any]:
    served = Client(app, PlainResponse).get(url, headers=headers)
    flask_only = Client(_lane(app).inner, PlainResponse).get(url, headers=headers)
    return served, flask_only


def _same(app: Flask, url: str, headers: dict[str, str]) -> Any:
    served, flask_only = _both(app, url, headers)
    assert served.status_code == flask_only.status_code, served.get_data(as_text=True)
    assert served.get_data() == flask_only.get_data()
    for name in _HEADERS:
        assert served.headers.get(name) == flask_only.headers.get(name), name
    return served


@pytest.fixture
def timeline(engine: Engine, team: TeamKeys, client: FlaskClient) -> str:
    send(engine, team, *(track("lane-user", f"Step {n}", n) for n in range(5)))
    found = client.get("/api/v1/customers/lookup?user_id=lane-user", headers=team.bearer(team.read))
    customer: str = found.get_json()["id"]
    return customer


def test_the_lane_answers_every_feed_query_as_the_view_does(
    app: Flask, team: TeamKeys, timeline: str
) -> None:
    base = f"/api/v1/customers/{timeline}/feed"
    read = team.bearer(team.read)
    first = _same(app, base + "?limit=2", read).get_json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    asc = _same(app, base + "?order=asc&limit=2", read).get_json()
    queries = [
        "",
        "?limit=2",
        f"?cursor={first['next_cursor']}",
        f"?cursor={first['next_cursor']}&limit=1",
        f"?limit=3&cursor={first['next_cursor']}",
        f"?cursor={asc['next_cursor']}",  # an asc cursor without order=asc: a 400
        f"?order=asc&cursor={asc['next_cursor']}",
        f"?cursor={first['next_cursor']}&cursor=junk",
        "?cursor=junk",
        "?cursor=",
        "?limit=0",
        "?limit=abc",
        "?limit=",
        "?limit=2&limit=3",
        "?limit=%C2%B2",
        "?type=track&event=Step+1",
        "?exclude_event=Step+2&limit=2",
        "?since=2024-03-01T12:02:00Z",
        "?since=2024-03-02T00:00:00Z&until=2024-03-01T00:00:00Z",
        "?nonsense=1",
        "?order=sideways",
    ]
    for query in queries:
        _same(app, base + query, read)


def test_the_lane_refuses_as_the_view_does(app: Flask, team: TeamKeys, timeline: str) -> None:
    url = f"/api/v1/customers/{timeline}/feed"
    assert _same(app, url, {}).status_code == 401
    assert _same(app, url, {"Authorization": "Bearer tlk_" + "x" * 32}).status_code == 401
    assert _same(app, url, {"Authorization": "Basic %%%"}).status_code == 401
    assert _same(app, url, team.bearer(team.ingest)).status_code == 403
    assert _same(app, url, team.basic(team.read)).status_code == 200
    for raw_id in ("999999999999", "1" * 19, "abc", "email:nobody@example.com", "user_id:lane-user"):
        _same(app, f"/api/v1/customers/{raw_id}/feed", team.bearer(team.read))


def test_a_merged_customer_answers_308_from_the_lane(app: Flask, team: TeamKeys, engine: Engine) -> None:
    gone, survivor = merged_pair(engine, team)
    answer = _same(app, f"/api/v1/customers/{gone}/feed?limit=2&type=track", team.bearer(team.read))
    assert answer.status_code == 308
    assert answer.headers["Location"] == f"/api/v1/customers/{survivor}/feed?limit=2&type=track"


def test_the_lane_answers_without_starting_flasks_request(
    app: Flask, client: FlaskClient, team: TeamKeys, timeline: str
) -> None:
    started: list[str] = []

    def note(sender: Flask, **extra: Any) -> None:
        started.append("started")

    request_started.connect(note, app)
    try:
        response = client.get(f"/api/v1/customers/{timeline}/feed?limit=2", headers=team.bearer(team.read))
        assert response.status_code == 200
        assert started == []
        client.get("/api/v1/customers/user_id:lane-user/feed", headers=team.bearer(team.read))
        assert started == ["started"]  # a reference is the view's
    finally:
        request_started.disconnect(note, app)


def test_the_lane_gives_back_its_gate_place_whatever_the_answer(
    app: Flask, client: FlaskClient, team: TeamKeys, timeline: str
) -> None:
    gate = _lane(app).resources.reads.gate
    read = team.bearer(team.read)
    for query in ("", "?limit=abc", "?cursor=junk"):
        client.get(f"/api/v1/customers/{timeline}/feed{query}", headers=read)
        client.get(f"/api/v1/customers/999999999999/feed{query}", headers=read)
    assert gate._running == {}
    # A team over its gate is refused by the lane as by the view (429, Retry-After).
    for _ in range(gate.limit):
        assert gate.enter(team.id)
    try:
        answer = _same(app, f"/api/v1/customers/{timeline}/feed", read)
        assert answer.status_code == 429 and answer.get_json()["code"] == "too_many_expensive_reads"
    finally:
        for _ in range(gate.limit):
            gate.leave(team.id)


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("limit", "7")],
        [("limit", "0")],
        [("limit", "200")],
        [("limit", "201")],
        [("limit", " 7")],
        [("limit", "7"), ("limit", "8")],
        [("cursor", "")],
        [("cursor", "nope")],
        [("order", "asc")],
        [("order", "desc"), ("limit", "3")],
        [("type", "track"), ("limit", "3")],
        [("other", "1")],
    ],
)
def test_feed_args_reads_a_query_as_feed_args_schema_does(pairs: list[tuple[str, str]]) -> None:
    args = MultiDict(pairs)
    schema = FeedArgs()
    try:
        expected: Any = schema.load(query_arguments(schema, args))
    except ValidationError as error:
        expected = invalid(error, "query").errors
    try:
        found: Any = dict(feed_args(args))
    except ApiError as error:
        found = error.errors
    assert found == expected
