"""Segment's own Python SDK (segment-analytics-python), pointed at a live server, reaches the feed.

The server is werkzeug's, in a thread on a loopback port, serving the test app: real
HTTP, real sockets, requests' own gzip and Basic auth. The same server shows how a
chunked body (no Content-Length) is read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from segment.analytics import Client
from segment.analytics.request import APIError
from werkzeug.serving import make_server

from tests.app.test_ingest import stored, track
from tests.conftest import TeamKeys

CALLS = ["alias", "group", "identify", "page", "screen", "track"]
KIB = 1024


@pytest.fixture(scope="module")
def live_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def send_every_call(analytics: Client, user_id: str) -> None:
    analytics.page(
        anonymous_id=f"anon-{user_id}", name="Pricing", properties={"url": "https://x.test/pricing"}
    )
    analytics.identify(
        user_id, {"email": f"{user_id}@example.com", "name": "Ada"}, anonymous_id=f"anon-{user_id}"
    )
    analytics.track(user_id, "Signed Up", {"plan": "pro"})
    analytics.page(user_id, "Docs", "Getting started", {"url": "https://x.test/docs"})
    analytics.screen(user_id, "App", "Settings", {"tab": "billing"})
    analytics.group(user_id, "acme-1", {"name": "Acme", "employees": 12})
    analytics.alias(f"legacy-{user_id}", user_id)


def feed(client: FlaskClient, team: TeamKeys, user_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    read = team.bearer(team.read)
    found = client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=read)
    assert found.status_code == 200, found.get_json()
    profile = found.get_json()
    items = client.get(f"/api/v1/customers/{profile['id']}/feed?order=asc", headers=read).get_json()["data"]
    return profile, items


@pytest.mark.parametrize(
    "mode",
    [
        {"gzip": True, "upload_interval": 0.05},  # the SDK's default: a consumer thread posting batches
        {"sync_mode": True},  # one request per call
    ],
    ids=["batched-gzip", "sync"],
)
def test_segment_python_sdk_delivers_every_call_to_the_feed(
    live_url: str, client: FlaskClient, team: TeamKeys, fold: Any, mode: dict[str, Any]
) -> None:
    errors: list[Exception] = []
    analytics = Client(
        write_key=team.ingest,
        host=live_url,
        on_error=lambda error, batch: errors.append(error),
        max_retries=1,
        timeout=10,
        **mode,
    )
    try:
        send_every_call(analytics, "sdk-user")
    finally:
        if not analytics.sync_mode:  # shutdown() fails in sync mode: there is no consumer to join
            analytics.shutdown()  # flushes the queue, then stops the consumer thread
    assert errors == []

    fold()
    profile, items = feed(client, team, "sdk-user")
    assert sorted({item["type"] for item in items}) == CALLS
    assert len(items) == 7
    assert profile["anonymous_ids"] == ["anon-sdk-user"]  # the anonymous page joined the customer
    assert profile["email"] == "sdk-user@example.com"
    assert [g["id"] for g in profile["groups"]] == ["acme-1"]
    assert {item["context"]["library"]["name"] for item in items} == {"analytics-python"}


def test_sdk_resends_are_stored_once(live_url: str, team: TeamKeys, engine: Any) -> None:
    analytics = Client(write_key=team.ingest, host=live_url, sync_mode=True, max_retries=1)
    for _ in range(3):
        analytics.track("u1", "Clicked", message_id="same-message")
    assert [r.message_id for r in stored(engine, team.id)] == ["same-message"]


def test_sdk_sees_our_code_and_message_for_a_bad_key(live_url: str) -> None:
    analytics = Client(write_key="tlk_not-a-real-key", host=live_url, sync_mode=True, max_retries=1)
    with pytest.raises(APIError) as raised:
        analytics.track("u1", "Clicked")
    assert (raised.value.status, raised.value.code) == (401, "invalid_key")
    assert "API key" in raised.value.message


def chunks(data: bytes, size: int = 16 * KIB) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_body_without_content_length_is_read(live_url: str, team: TeamKeys, engine: Any) -> None:
    body = json.dumps({"batch": [track(f"m{n}") for n in range(50)]}).encode()
    response = requests.post(
        f"{live_url}/v1/batch", data=chunks(body), headers=team.basic(team.ingest), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 50


def test_chunked_body_over_500_kib_is_413(live_url: str, team: TeamKeys, engine: Any) -> None:
    body = b'{"batch": [' + b" " * (600 * KIB) + b"]}"
    response = requests.post(
        f"{live_url}/v1/batch", data=chunks(body), headers=team.basic(team.ingest), timeout=10
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert stored(engine, team.id) == []
