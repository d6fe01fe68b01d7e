"""Keys under gunicorn with two worker processes, as production runs them (SPEC §5, §6).

A revocation made through one worker is refused by both within a second, though both
had the key in their cache; and no secret ever reaches gunicorn's output (its log and
the app's, at debug level) or any answer after the one that created it.

Which worker answered is read from the JSON log lines: each carries the process id, and
the key cache logs (at debug) every load of a key from Postgres.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from service.settings import Settings
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer

pytestmark = pytest.mark.slow

EVENT = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-processes-1"}


class Server(GunicornServer):
    """The server, and what its JSON log lines say."""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = {"message": line}
            if isinstance(record, dict):
                records.append(record)
        return records

    def workers_that_loaded(self, key_id: str, usable: bool) -> set[Any]:
        """The worker pids whose key cache loaded this key from Postgres, seeing it usable or not."""
        wanted = f"key cache loaded key={key_id} usable={usable}"
        return {r.get("process") for r in self.log_records() if r.get("message") == wanted}


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gunicorn with two sync workers on a free loopback port, logging at debug to a file."""
    with Server(tmp_path_factory.mktemp("gunicorn"), {"LOG_LEVEL": "debug"}) as server:
        yield server


def post_key(server: Server, admin: str, name: str, scopes: list[str]) -> dict[str, Any]:
    """A new key made through the API with this admin key: its 201 body, secret included."""
    made = requests.post(
        f"{server.url}/api/v1/keys",
        json={"name": name, "scopes": scopes},
        headers=TeamKeys.bearer(admin),
        timeout=5,
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def send(server: Server, secret: str) -> int:
    """Segment posting one event with this key, on a fresh connection."""
    response = requests.post(
        f"{server.url}/v1/segment",
        data=json.dumps(EVENT),
        headers={**TeamKeys.basic(secret), "Connection": "close", "Content-Type": "application/json"},
        timeout=5,
    )
    return response.status_code


def burst(server: Server, secret: str, count: int) -> list[int]:
    """`count` sends, four at a time, so that both workers answer some."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: send(server, secret), range(count)))


def test_revocation_reaches_both_workers_within_a_second(server: Server, engine: Engine) -> None:
    team = make_team(engine)
    made = post_key(server, team.admin, "Segment", ["ingest"])
    victim, victim_id = made["key"], made["id"]

    # Warm both workers' caches with the key.
    deadline = time.monotonic() + 10
    while len(server.workers_that_loaded(victim_id, usable=True)) < 2:
        assert time.monotonic() < deadline, "both workers did not answer within 10 s"
        assert set(burst(server, victim, 8)) == {200}
    assert set(burst(server, victim, 8)) == {200}  # cached in both, right now

    revoked = requests.delete(
        f"{server.url}/api/v1/keys/{victim_id}", headers=TeamKeys.bearer(team.admin), timeout=5
    )
    assert revoked.status_code == 204
    revoked_at = time.monotonic()

    # Poll for up to a second until both workers have seen the revocation...
    while time.monotonic() < revoked_at + 1.0:
        burst(server, victim, 4)
        if len(server.workers_that_loaded(victim_id, usable=False)) == 2:
            break
        time.sleep(0.05)
    # ...then every request, whichever worker takes it, is refused.
    assert set(burst(server, victim, 20)) == {401}
    assert len(server.workers_that_loaded(victim_id, usable=False)) == 2
    assert time.monotonic() - revoked_at < 5  # sanity: the check itself did not stall


def test_no_secret_reaches_the_logs_or_any_later_answer(server: Server, engine: Engine) -> None:
    team = make_team(engine)
    url = server.url
    admin = TeamKeys.bearer(team.admin)
    made = post_key(server, team.admin, "Segment", ["ingest"])
    rotated = requests.post(
        f"{url}/api/v1/keys/{made['id']}/rotate", json={"grace_seconds": 0}, headers=admin, timeout=5
    ).json()
    unknown = "tlk_" + "Q" * 32
    secrets = [made["key"], rotated["key"], team.admin, team.ingest, team.read, unknown]

    answers: list[requests.Response] = []
    for secret in secrets:
        answers += [
            requests.post(f"{url}/v1/segment", json=EVENT, headers=TeamKeys.basic(secret), timeout=5),
            requests.post(f"{url}/v1/track", json={**EVENT, "writeKey": secret}, timeout=5),
            requests.get(f"{url}/api/v1/keys", headers=TeamKeys.bearer(secret), timeout=5),
            requests.get(f"{url}/api/v1/keys/audit", headers=TeamKeys.basic(secret), timeout=5),
            requests.post(
                f"{url}/api/v1/keys", json={"name": "x", "scopes": [secret]}, headers=admin, timeout=5
            ),
        ]
    answers.append(requests.delete(f"{url}/api/v1/keys/999999999", headers=admin, timeout=5))
    answers.append(requests.delete(f"{url}/api/v1/keys/{rotated['id']}", headers=admin, timeout=5))
    deadline = time.monotonic() + 1.0
    while True:  # the other worker may hold the key for up to its cache TTL
        answers.append(requests.get(f"{url}/api/v1/keys", headers=TeamKeys.bearer(rotated["key"]), timeout=5))
        if answers[-1].status_code == 401 or time.monotonic() > deadline:
            break
    assert answers[-1].status_code == 401  # the revoked key, and no echo of it
    answers.append(requests.get(f"{url}/api/v1/keys?limit=200", headers=admin, timeout=5))
    answers.append(requests.get(f"{url}/api/v1/keys/audit?limit=200", headers=admin, timeout=5))
    assert {a.status_code for a in answers} >= {200, 204, 400, 401, 403, 404}

    # The log is captured: the revocation's line is there (the worker writes it before its 204).
    log = server.wait_logged(f"key revoked: team={team.id} key={rotated['id']}")
    seen = log + "".join(a.text + str(a.headers) for a in answers)
    for secret in secrets:
        for form in (secret, secret[12:], base64.b64encode(f"{secret}:".encode()).decode()):
            assert form not in seen


# --- attacks (issue 13), over the real server: each failed before the change -----------


def raw_request(server: Server, data: bytes, *, read: bool = True) -> bytes:
    """Send these bytes as they are (a request no HTTP library would send) and read the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(data)
        if not read:
            return b""
        answer = b""
        while True:
            try:
                piece = connection.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not piece:
                break
            answer += piece
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def key_forms(secret: str) -> list[str]:
    return [
        secret,
        secret[12:],
        base64.b64encode(f"{secret}:".encode()).decode(),
        base64.b64encode(f"user:{secret}".encode()).decode()[8:],
    ]


def test_no_form_of_a_key_reaches_any_log_line_whatever_the_client_sends(
    server: Server, engine: Engine
) -> None:
    team = make_team(engine)
    secret = team.admin
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    basic_user = base64.b64encode(f"user:{secret}".encode()).decode()
    head = "Host: 127.0.0.1\r\nConnection: close\r\n"
    bearer = f"Authorization: Bearer {secret}"
    crafted = [
        f"GET /api/v1/keys HTTP/1.1\r\n{head}Authorization Bearer {secret}\r\n\r\n",  # no colon
        f"GET /api/v1/keys HTTP/1.1\r\n{head}Authorization Basic {basic}\r\n\r\n",
        f"GET /api/v1/keys HTTP/1.1\r\n{head}Authorization Basic {basic_user}\r\n\r\n",
        f"GET /api/v1/keys HTTP/1.1\r\n{head}Authorization: Bearer {secret}\x01\r\n\r\n",  # bad byte
        f"GET /v1/segment?writeKey={secret} HTTP/9.9\r\n{head}\r\n",  # bad version
        f"G\x01T /v1/segment?writeKey={secret} HTTP/1.1\r\n{head}\r\n",  # bad method
        f"GET /v1/segment?writeKey={secret} {secret}\r\n{head}\r\n",  # bad request line
        f"GET /api/v1/keys/{secret} HTTP/1.1\r\n{head}Authorization: Bearer {secret}\r\n\r\n",
        f"GET /api/v1/keys?cursor={secret}&limit={secret} HTTP/1.1\r\n{head}{bearer}\r\n\r\n",
        f"GET /api/v1/keys HTTP/1.1\r\n{head}X-Junk: {secret}{'x' * 9000}\r\n\r\n",  # header too large
        f"GET /api/v1/keys HTTP/1.1\r\n{head}{bearer}\r\nAuthorization: Basic {basic}\r\n\r\n",
        f"GET /api/v1/keys HTTP/1.1\r\n{head}Content-Length: {secret}\r\n\r\n",
    ]
    statuses = [status_of(raw_request(server, request.encode("latin-1"))) for request in crafted]
    # A bad chunk size carrying the key: its status is app/ingest/body.py's business; its log line is ours.
    bad_chunk = f"POST /v1/segment HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n\r\n{secret}\r\n"
    raw_request(server, bad_chunk.encode())
    body = json.dumps({"type": "track", "userId": "u", "event": secret, "writeKey": secret})
    statuses += [
        requests.post(
            f"{server.url}/v1/segment", data=body[:-3], headers=TeamKeys.basic(secret), timeout=5
        ).status_code,
        requests.post(
            f"{server.url}/api/v1/keys",
            data=f'{{"name": "{secret}\\u0000", "scopes": ["{secret}"]}}',
            headers={**TeamKeys.bearer(secret), "Content-Type": "application/json"},
            timeout=5,
        ).status_code,
    ]
    assert [(n, s) for n, s in enumerate(statuses) if not 400 <= s < 500] == [], statuses
    stored = requests.post(f"{server.url}/v1/track", data=body, timeout=5)  # the key as writeKey
    assert stored.status_code == 200

    # The front door logs each refusal before it answers it (app/serving/worker.py): by now
    # the lines are written; waiting for one is what makes the look below see them.
    log = server.wait_logged("Invalid request from ip=")
    assert "Invalid HTTP Header" in log or "Invalid request" in log  # gunicorn did log the junk
    for form in key_forms(secret):
        assert form not in log


def test_a_slow_body_sent_across_a_revoke_creates_nothing(server: Server, engine: Engine) -> None:
    """The request is authenticated before the revoke; its body arrives after the 204."""
    team = make_team(engine)
    second = post_key(server, team.admin, "second admin", ["admin"])
    body = json.dumps({"name": "minted after the revoke", "scopes": ["admin"]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            b"POST /api/v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Authorization: Bearer {second['key']}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        # The worker has authenticated the key (its cache loaded it, usable) and waits for the body.
        deadline = time.monotonic() + 30
        while not server.workers_that_loaded(second["id"], usable=True):
            assert time.monotonic() < deadline, "no worker authenticated the slow request's key"
            time.sleep(0.02)
        revoked = requests.delete(
            f"{server.url}/api/v1/keys/{second['id']}", headers=TeamKeys.bearer(team.admin), timeout=5
        )
        assert revoked.status_code == 204
        time.sleep(0.2)
        slow.sendall(body[10:])
        answer = b""
        while piece := slow.recv(65536):
            answer += piece
    assert status_of(answer) == 401, answer[:300]
    with engine.connect() as connection:
        names = connection.exec_driver_sql(
            "SELECT name FROM api_keys WHERE team_id = %s", (team.id,)
        ).scalars()
        assert "minted after the revoke" not in set(names)


def test_a_revoked_admin_key_mints_nothing_through_another_workers_cache(
    server: Server, engine: Engine
) -> None:
    team = make_team(engine)
    made = post_key(server, team.admin, "second admin", ["admin"])
    victim, victim_id = made["key"], made["id"]

    def list_keys(_: int) -> int:
        return requests.get(
            f"{server.url}/api/v1/keys",
            headers={**TeamKeys.bearer(victim), "Connection": "close"},
            timeout=5,
        ).status_code

    deadline = time.monotonic() + 10
    while len(server.workers_that_loaded(victim_id, usable=True)) < 2:  # in both workers' caches
        assert time.monotonic() < deadline, "both workers did not answer within 10 s"
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(list_keys, range(8))) == {200}

    def mint(n: int) -> int:
        return requests.post(
            f"{server.url}/api/v1/keys",
            json={"name": f"minted {n}", "scopes": ["admin"]},
            headers={**TeamKeys.bearer(victim), "Connection": "close"},
            timeout=5,
        ).status_code

    revoked = requests.delete(
        f"{server.url}/api/v1/keys/{victim_id}", headers=TeamKeys.bearer(team.admin), timeout=5
    )
    assert revoked.status_code == 204
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(mint, range(24)))  # well within the 0.5 s cache TTL
    assert 201 not in statuses
    assert set(statuses) <= {401, 429}
    with engine.connect() as connection:
        count = connection.exec_driver_sql(
            "SELECT count(*) FROM api_keys WHERE team_id = %s AND name LIKE 'minted %%'", (team.id,)
        ).scalar()
    assert count == 0


def test_a_forwarded_script_name_never_chooses_the_location(server: Server, engine: Engine) -> None:
    from tests.app.test_customers import merged_pair

    team = make_team(engine)
    gone, survivor = merged_pair(engine, team)
    for path, script_name in [
        (f"//evil.example/api/v1/customers/{gone}", "//evil.example"),
        (f"/api/v1/customers/{gone}", "/api"),
        (f"/api/v1/customers/{gone}", ""),
    ]:
        answer = raw_request(
            server,
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {team.read}\r\nSCRIPT_NAME: {script_name}\r\n"
            "X-Forwarded-Host: evil.example\r\nX-Forwarded-Prefix: //evil.example\r\n\r\n".encode(),
        )
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        locations = [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("location:")
        ]
        assert "evil" not in head, head
        assert locations in ([], [f"/api/v1/customers/{survivor}"]), head
        if path.startswith("/api/"):
            assert status_of(answer) == 308 and locations == [f"/api/v1/customers/{survivor}"]
