"""The front door under gunicorn, as the Procfile starts it (app/serving/worker.py, docs/serving.md).

Real gunicorn with two worker processes on a loopback port, real sockets. Its deadlines
are shortened through the environment (head and body 2 s, idle keep-alive 2 s) so the
slow-client cases finish in seconds; the production values are in service/settings.py and
app/serving/gunicorn_config.py. Nothing here measures speed: "answered" beside slow clients
means within ANSWER_SECONDS, far below what a server held by them would need (each slow
connection holds its reader for DEADLINE_SECONDS, 200 of them over two processes) and far
above what a loaded machine adds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import Engine, text

from service.settings import Settings
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer as Server
from tests.servers import assert_envelope, connect, exchange, read_answer

pytestmark = pytest.mark.slow

DEADLINE_SECONDS = 2.0  # head, body and idle, for this server
# A server that served the 200 slow connections one by one would answer after ~200 s.
ANSWER_SECONDS = 15.0


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env: dict[str, str | None] = {
        "LOG_LEVEL": "info",
        "REQUEST_HEAD_SECONDS": str(DEADLINE_SECONDS),
        "REQUEST_BODY_SECONDS": str(DEADLINE_SECONDS),
        "GUNICORN_KEEPALIVE": str(int(DEADLINE_SECONDS)),
        "GUNICORN_WORKER_CLASS": None,  # the configured default, as in production
        # One connection lands in one process, whose share of a team's requests budget
        # (350/s, burst 700, over two processes) is less than 1,000 quick POSTs: the
        # budgets are tests/app/test_ratelimit.py's subject, not this module's.
        "INGEST_REQUEST_LIMIT": "0",
        "INGEST_RATE_LIMIT": "0",
    }
    with Server(tmp_path_factory.mktemp("front-door"), env) as server:
        yield server


@pytest.fixture
def keys(engine: Engine) -> TeamKeys:
    return make_team(engine, "front door")


def track(message_id: str) -> bytes:
    event = {"type": "track", "event": "Clicked", "userId": "u1", "messageId": message_id}
    return json.dumps(event).encode()


def post_request(keys: TeamKeys, body: bytes, path: str = "/v1/segment") -> bytes:
    auth = keys.basic(keys.ingest)["Authorization"]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Trickler:
    """Connections that each send one byte a second of a request that never completes in time."""

    def __init__(self, server: Server, requests_: list[tuple[bytes, bytes]]):
        """Each (sent at once, then sent a byte a second)."""
        self.sockets = [connect(server, timeout=10) for _ in requests_]
        for sock, (prefix, _) in zip(self.sockets, requests_, strict=True):
            if prefix:
                sock.sendall(prefix)
        self.pending = [trickled for _, trickled in requests_]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for index, sock in enumerate(self.sockets):
                if self.pending[index]:
                    try:
                        sock.send(self.pending[index][:1])
                    except OSError:
                        self.pending[index] = b""
                        continue
                    self.pending[index] = self.pending[index][1:]
            self.stop.wait(1.0)

    def __enter__(self) -> Trickler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()

    def outcomes(self) -> list[int | None]:
        """Each connection's answer status (None: closed without one)."""
        found: list[int | None] = []
        for sock in self.sockets:
            try:
                answer = read_answer(sock, bytearray())
            except (ConnectionResetError, TimeoutError):
                answer = None
            if answer is not None:
                assert_envelope(answer, answer.status, "request_timeout")
            found.append(None if answer is None else answer.status)
        return found


def test_200_trickling_connections_do_not_stop_others_from_being_answered(
    server: Server, keys: TeamKeys, engine: Engine
) -> None:
    slow_head = (b"", post_request(keys, track("never")))  # the head arrives a byte a second
    whole_head = post_request(keys, b"x" * 1000)[:-1000]
    slow_body = (whole_head, b"x" * 1000)  # the head at once, the body a byte a second
    with Trickler(server, [slow_head] * 100 + [slow_body] * 100) as slow:
        time.sleep(0.3)  # every slow connection has been accepted and is in its read
        answered = []
        for n in range(5):
            health = requests.get(f"{server.url}/healthz", timeout=ANSWER_SECONDS)
            post = requests.post(
                f"{server.url}/v1/segment",
                data=track(f"beside-the-slow-{n}"),
                headers={**keys.basic(keys.ingest), "Content-Type": "application/json"},
                timeout=ANSWER_SECONDS,
            )
            answered.append((health.status_code, post.status_code))
        assert answered == [(200, 200)] * 5
        outcomes = slow.outcomes()  # each slow one, after its deadline
    assert set(outcomes) <= {408, None}, outcomes
    assert outcomes[100:].count(408) == 100  # a body that stalls: the app's JSON 408
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t"), {"t": keys.id}
        ).scalar_one()
    assert stored == 5  # the five normal POSTs, nothing of the slow ones


def test_a_head_that_stalls_gets_a_json_408_then_the_connection_closes(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never ends
        buffer = bytearray()
        body = assert_envelope(read_answer(sock, buffer), 408, "request_timeout")
        assert "headers" in body["errors"]
        assert sock.recv(1) == b""


def test_one_connection_carries_1000_posts_without_reconnecting(
    server: Server, keys: TeamKeys, engine: Engine
) -> None:
    with connect(server) as sock:
        local = sock.getsockname()
        buffer = bytearray()
        for n in range(1000):
            sock.sendall(post_request(keys, track(f"kept-{n}")))
            answer = read_answer(sock, buffer)
            assert answer is not None, f"closed after {n} requests"
            assert answer.status == 200 and answer.headers.get("connection", "").lower() != "close"
        assert sock.getsockname() == local
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t"), {"t": keys.id}
        ).scalar_one()
    assert stored == 1000


def test_an_idle_connection_is_closed_after_the_keepalive_timeout_without_an_answer(server: Server) -> None:
    with connect(server, timeout=DEADLINE_SECONDS + 5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buffer = bytearray()
        answer = read_answer(sock, buffer)
        assert answer is not None and answer.status == 200
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed, and nothing was sent before the close
        assert time.monotonic() - started >= DEADLINE_SECONDS - 0.5


def test_oversized_headers_get_a_json_431_and_the_header_is_not_logged(server: Server) -> None:
    secret = "tlk_" + "S" * 9000
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n"
    body = assert_envelope(exchange(server, request.encode()), 431, "request_headers_too_large")
    assert "headers" in body["errors"]
    assert "tlk_SSSS" not in server.log_path.read_text(errors="replace")


def test_too_many_headers_get_a_json_431(server: Server) -> None:
    fields = "".join(f"X-Filler-{n}: {n}\r\n" for n in range(150))
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n"
    assert_envelope(exchange(server, request.encode()), 431, "request_headers_too_large")


def test_a_request_line_too_long_gets_a_json_414(server: Server) -> None:
    request = f"GET /healthz?{'q' * 5000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = assert_envelope(exchange(server, request.encode()), 414, "request_line_too_long")
    assert "4094" in body["message"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="no method or path"),
        pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", id="unknown version"),
        pytest.param(b"G<T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="bad method"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n", id="bad header name"),
        pytest.param(
            b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            id="bad chunk size",
        ),
    ],
)
def test_a_malformed_request_gets_a_json_400(server: Server, request_bytes: bytes) -> None:
    answer = exchange(server, request_bytes)
    assert_envelope(answer, 400, "malformed_request")


def test_the_log_of_a_malformed_header_names_no_key(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nAuthorization: Bearer tlk_leaky\x01value\r\n\r\n"
    logged = server.log_text().count("Invalid request from ip=")
    assert_envelope(exchange(server, request), 400, "malformed_request")
    # The worker logs the refusal, then answers it: wait for that line, then look.
    assert "tlk_leaky" not in server.wait_logged("Invalid request from ip=", logged + 1)
