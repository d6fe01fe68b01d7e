"""The ingest lane under real gunicorn, real sockets: as Segment's senders see it.

An over-limit body is read (up to app.ingest.body.DRAIN_BYTES) before the 413, so a client
that writes its whole body before reading (Python's http.client) reads our JSON 413
instead of a broken pipe, after which Segment would retry. Each worker class the
gunicorn config can run is tried: the sync worker, and gevent (monkey-patched: the
waker thread and the group commit's locks become greenlets) when it is installed.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.ingest.body import DRAIN_BYTES, MAX_REQUEST_BYTES
from service.settings import Settings
from tests.app.test_ingest import stored, track
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer

pytestmark = pytest.mark.slow

KIB = 1024
WORKER_CLASSES = [
    "sync",
    pytest.param(
        "gevent",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("gevent") is None, reason="gevent is not installed"
        ),
    ),
]


class _SmallBufferConnection(http.client.HTTPConnection):
    """http.client with a small send buffer, as over a real network: the body cannot
    all sit in the kernel's buffers, so a server that closes without reading it resets
    the connection while the client is still writing (on loopback it would otherwise
    fit in the buffers and hide the problem)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * KIB)


def _answer(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = _SmallBufferConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def port(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """gunicorn (the Procfile's config) with two workers of the class, on a free port."""
    env = {"GUNICORN_WORKER_CLASS": request.param}
    with GunicornServer(tmp_path_factory.mktemp("gunicorn"), env) as server:
        yield server.port


@pytest.fixture
def http_team(engine: Engine) -> TeamKeys:
    return make_team(engine)


def test_http_client_writing_a_600_kib_body_reads_the_json_413(
    port: int, http_team: TeamKeys, engine: Engine
) -> None:
    assert MAX_REQUEST_BYTES < 600 * KIB <= DRAIN_BYTES
    body = b'{"batch": [' + b" " * (600 * KIB) + b"]}"
    headers = {**http_team.basic(http_team.ingest), "Content-Type": "application/json"}
    status, answer = _answer(port, "POST", "/v1/batch", body, headers)
    assert status == 413
    assert json.loads(answer)["code"] == "request_too_large"
    assert "500 KiB" in json.loads(answer)["message"]
    assert stored(engine, http_team.id) == []


def test_single_events_and_a_batch_are_stored_through_gunicorn(
    port: int, http_team: TeamKeys, engine: Engine
) -> None:
    headers = {**http_team.basic(http_team.ingest), "Content-Type": "application/json"}
    for n in range(20):
        status, answer = _answer(
            port, "POST", "/v1/track", json.dumps(track(f"h{port}-{n}")).encode(), headers
        )
        assert (status, json.loads(answer)) == (200, {"success": True})
    batch = {"batch": [track(f"hb{port}-{n}") for n in range(100)]}
    status, answer = _answer(port, "POST", "/v1/batch", json.dumps(batch).encode(), headers)
    assert status == 200
    assert json.loads(answer)["accepted"] == 100
    ids = {row.message_id for row in stored(engine, http_team.id)}
    assert {f"h{port}-{n}" for n in range(20)} | {f"hb{port}-{n}" for n in range(100)} <= ids


def test_a_bad_key_is_the_json_401_through_gunicorn(port: int) -> None:
    status, answer = _answer(
        port, "POST", "/v1/segment", json.dumps(track("x")).encode(), TeamKeys.bearer("tlk_nope")
    )
    assert status == 401
    assert json.loads(answer)["code"] == "invalid_key"
