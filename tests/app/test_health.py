"""/readyz and /metrics (issue 13): cheap per call, nothing leaked, a token when one is set,
and fold gauges that say when their source cannot be read instead of vanishing.

"Cheap" is proven by counting the SQL statements the app's health engine runs, not by timing.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from app import create_app
from service.settings import Settings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting to it is refused at once


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, **overrides)})
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["timeline"].dispose()


def statements(app: Flask) -> list[str]:
    """Every SQL statement the app's health engine (/readyz, /metrics) runs from now on."""
    seen: list[str] = []
    event.listen(
        app.extensions["timeline"].health,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: seen.append(statement),
    )
    return seen


def samples(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = value
    return found


def unreachable_database(settings: Settings) -> str:
    return f"postgresql+psycopg://nobody:secret-password@127.0.0.1:{_closed_port()}/nothing"


def test_readyz_is_ready_and_says_only_ok(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "migrations": "ok", "redis": "ok"},
    }


def test_readyz_is_cheap_when_called_in_a_loop(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    seen = statements(app)
    for _ in range(50):
        assert client.get("/readyz").status_code == 200
    assert len(seen) <= 5  # a check a second at most, and migrations read once


def test_readyz_says_postgres_ok_while_every_pool_the_routes_use_is_busy(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(db_pool_size=1, db_read_pool_size=1)
    resources = app.extensions["timeline"]
    held = [resources.engine.connect(), resources.engine.connect(), resources.reads.connect()]
    try:  # the write pool (1 + 1 overflow) and the read pool (1) are all checked out
        response = app.test_client().get("/readyz")
    finally:
        for connection in held:
            connection.close()
    assert response.status_code == 200
    assert response.get_json()["checks"]["postgres"] == "ok"


def test_readyz_names_no_error_class_host_or_secret_when_down(
    make_app: Callable[..., Flask], settings: Settings
) -> None:
    client = make_app(
        database_url=unreachable_database(settings), redis_url=f"redis://127.0.0.1:{_closed_port()}/0"
    ).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {
        "postgres": "unavailable",
        "migrations": "unknown",
        "redis": "unavailable",
    }
    text = response.get_data(as_text=True)
    for leak in ("Error", "127.0.0.1", "secret-password", "nobody", "psycopg"):
        assert leak not in text


def test_metrics_read_the_fold_figures_at_most_once_per_refresh(make_app: Callable[..., Flask]) -> None:
    app = make_app(metrics_refresh_seconds=60.0)
    client = app.test_client()
    seen = statements(app)
    for _ in range(30):
        response = client.get("/metrics")
        assert response.status_code == 200
    backlog = [s for s in seen if "folded_at IS NULL" in s]
    assert len(backlog) == 1
    figures = samples(response.get_data(as_text=True))
    assert figures["fold_backlog_up"] == "1" and figures["fold_queue_up"] == "1"
    assert float(figures["fold_backlog_events"]) >= 0 and float(figures["fold_queue_depth"]) >= 0


def test_metrics_say_when_the_database_or_redis_cannot_be_read(
    make_app: Callable[..., Flask], settings: Settings
) -> None:
    client = make_app(
        database_url=unreachable_database(settings), redis_url=f"redis://127.0.0.1:{_closed_port()}/0"
    ).test_client()
    response = client.get("/metrics")
    assert response.status_code == 200
    figures = samples(response.get_data(as_text=True))
    assert figures["fold_backlog_up"] == "0" and figures["fold_queue_up"] == "0"
    assert figures["fold_backlog_events"] == "NaN"
    assert figures["fold_lag_seconds"] == "NaN"
    assert figures["fold_queue_depth"] == "NaN"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer", "Basic bWV0cmljcw==", "Bearer s3cret-metrics-token-x", "Bearer é"],
)
def test_metrics_need_the_token_when_one_is_set(
    make_app: Callable[..., Flask], authorization: str | None
) -> None:
    app = make_app(metrics_token="s3cret-metrics-token")
    client = app.test_client()
    seen = statements(app)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_metrics_token"
    assert "s3cret-metrics-token" not in response.get_data(as_text=True)
    assert seen == []  # refused before any query


def test_metrics_answer_the_right_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(metrics_token="s3cret-metrics-token").test_client()
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert response.status_code == 200
    assert "fold_backlog_up 1" in response.get_data(as_text=True)
