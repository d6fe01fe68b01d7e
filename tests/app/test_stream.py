"""`GET /api/v1/customers/{id}/stream`: a customer's new feed items, live, resumable.

Each stream is read by a thread of its own from the test client (unbuffered), while the
test stores and folds events as ingest and the worker would; the fold's `NOTIFY` reaches
the app's listener through real Postgres. Every wait is on the items themselves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from werkzeug.test import TestResponse

from app.read_api import stream as stream_module
from app.read_api.live import END, Listener, libpq_conninfo
from store.apikeys import create_key, revoke_key
from store.live import StreamPosition
from tests.app.test_console import sign_in as console_sign_in
from tests.app.test_customers import customer_of, send, track
from tests.conftest import TeamKeys
from tests.servers import GunicornServer, connect, read_answer, web_workers


@dataclass
class Event:
    name: str
    id: str | None
    data: str


@dataclass
class Reader:
    """A stream read in a thread: its SSE events as they arrive."""

    response: TestResponse
    events: list[Event] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def start(self) -> Reader:
        threading.Thread(target=self._read, daemon=True, name="sse-reader").start()
        return self

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.response:
                buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    fields = dict(
                        line.split(": ", 1)
                        for line in block.splitlines()
                        if line and not line.startswith(":")
                    )
                    if "event" in fields:
                        self.events.append(Event(fields["event"], fields.get("id"), fields.get("data", "")))
        except BaseException as error:
            self.failure = error
        finally:
            self.ended.set()

    def items(self) -> list[Event]:
        return [e for e in self.events if e.name == "item"]

    def wait_items(self, count: int, seconds: float = 30) -> list[Event]:
        def arrived() -> list[Event]:
            assert self.failure is None, f"the stream failed: {self.failure!r}"
            return self.items() if len(self.items()) >= count else []

        found: list[Event] = wait_for(f"{count} items", arrived, seconds)
        return found


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


def open_stream(client: FlaskClient, secret: str, customer: str, last_event_id: str | None = None) -> Reader:
    headers = TeamKeys.bearer(secret)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = client.get(f"/api/v1/customers/{customer}/stream", headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return Reader(response).start()


def names(reader: Reader) -> list[str]:
    return [json.loads(e.data)["event"] for e in reader.items()]


def test_new_events_of_the_customer_arrive_as_feed_items_in_fold_order(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, track("ada", "Before", 0))
    customer = customer_of(client, team, "ada")
    reader = open_stream(client, team.read, customer)
    # The stream starts after what was folded before it opened.
    send(engine, team, track("ada", "Viewed Pricing", 5), track("bob", "Elsewhere", 5))
    send(engine, team, track("ada", "Signed Up", 1))  # dated earlier, folded later: still news
    reader.wait_items(2)
    assert names(reader) == ["Viewed Pricing", "Signed Up"]
    feed = client.get(f"/api/v1/customers/{customer}/feed", headers=team.bearer(team.read)).get_json()["data"]
    by_id = {item["id"]: item for item in feed}
    for event in reader.items():
        item = json.loads(event.data)
        assert item == by_id[item["id"]]  # exactly the feed's item
    ids = [StreamPosition.parse(e.id or "") for e in reader.items()]
    assert all(ids) and ids == sorted(ids)  # type: ignore[type-var]


def test_a_stream_resumed_with_last_event_id_gets_what_it_missed_once(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, track("cy", "Opened", 0))
    customer = customer_of(client, team, "cy")
    first = open_stream(client, team.read, customer)
    send(engine, team, track("cy", "One", 1))
    send(engine, team, track("cy", "Two", 2))
    received = first.wait_items(2)
    # The client dropped after "One"; "Two" and what follows must come, once each.
    send(engine, team, track("cy", "Three", 3), track("cy", "Four", 4))
    resumed = open_stream(client, team.read, customer, last_event_id=received[0].id)
    resumed.wait_items(3)
    send(engine, team, track("cy", "Five", 5))
    resumed.wait_items(4)
    assert names(resumed) == ["Two", "Three", "Four", "Five"]


def test_notices_missed_while_the_listener_was_down_are_caught_up(
    client: FlaskClient, app: Flask, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, track("dee", "Opened", 0))
    customer = customer_of(client, team, "dee")
    reader = open_stream(client, team.read, customer)
    listener = app.extensions["timeline_live"].get()
    wait_for("the listener", listener.listening.is_set)
    # Postgres ends the listening session (as a restart would); events fold meanwhile.
    with engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'timeline-live' AND datname = current_database()"
            )
        )
        connection.commit()
    send(engine, team, track("dee", "During", 1))
    wait_for("the listener back", listener.listening.is_set)
    send(engine, team, track("dee", "After", 2))
    reader.wait_items(2)
    assert names(reader) == ["During", "After"]


def test_a_revoked_key_ends_the_stream_saying_why(
    client: FlaskClient, engine: Engine, team: TeamKeys, quick_heartbeat: None
) -> None:
    send(engine, team, track("eve", "Opened", 0))
    customer = customer_of(client, team, "eve")
    reader = open_stream(client, team.read, customer)
    me = client.get("/api/v1/me", headers=team.bearer(team.read)).get_json()
    with engine.begin() as connection:
        revoke_key(connection, team.id, int(me["key"]["id"]), datetime.now(UTC))
    wait_for("the stream to end", reader.ended.is_set)
    assert reader.events[-1].name == "end"
    assert json.loads(reader.events[-1].data)["code"] == "invalid_key"


def test_another_teams_key_never_sees_the_customer(
    client: FlaskClient, engine: Engine, team: TeamKeys, other_team: TeamKeys
) -> None:
    send(engine, team, track("fay", "Opened", 0))
    customer = customer_of(client, team, "fay")
    response = client.get(f"/api/v1/customers/{customer}/stream", headers=other_team.bearer(other_team.read))
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_the_stream_needs_the_read_scope(client: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    send(engine, team, track("gus", "Opened", 0))
    customer = customer_of(client, team, "gus")
    response = client.get(f"/api/v1/customers/{customer}/stream", headers=team.bearer(team.ingest))
    assert response.status_code == 403
    assert response.get_json()["code"] == "missing_scope"
    assert client.get(f"/api/v1/customers/{customer}/stream").status_code == 401


@pytest.mark.parametrize("bad", ["abc", "12", "-5", "1-2-3", "1" * 30 + "-1"])
def test_a_malformed_last_event_id_is_a_400(
    client: FlaskClient, engine: Engine, team: TeamKeys, bad: str
) -> None:
    send(engine, team, track("hal", "Opened", 0))
    customer = customer_of(client, team, "hal")
    headers = {**team.bearer(team.read), "Last-Event-ID": bad}
    response = client.get(f"/api/v1/customers/{customer}/stream", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_last_event_id"


def test_past_the_process_share_of_streams_a_503_with_retry_after(
    client: FlaskClient, app: Flask, engine: Engine, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(engine, team, track("ivy", "Opened", 0))
    customer = customer_of(client, team, "ivy")
    listener = app.extensions["timeline_live"].get()
    monkeypatch.setattr(listener, "open", app.extensions["timeline"].settings.live_streams_per_process)
    response = client.get(f"/api/v1/customers/{customer}/stream", headers=team.bearer(team.read))
    assert response.status_code == 503
    assert response.get_json()["code"] == "too_many_streams"
    assert response.headers["Retry-After"]


def _items(lines: Iterator[bytes], count: int) -> list[tuple[str, str]]:
    """(id, event name) of the next `count` items on an SSE stream read line by line."""
    found: list[tuple[str, str]] = []
    current = ""
    for line in lines:
        if line.startswith(b"id: "):
            current = line[4:].decode()
        elif line.startswith(b"data: ") and current:
            found.append((current, json.loads(line[6:])["event"]))
            current = ""
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {found}")


def test_a_graceful_stop_ends_open_streams_and_the_client_resumes_on_the_next_server(
    client: FlaskClient, engine: Engine, team: TeamKeys, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """gunicorn's SIGTERM (a deploy, a restart) ends open streams at once, instead of
    leaving them to be cut at its graceful timeout; the client reconnects with
    Last-Event-ID to the next server and misses nothing folded meanwhile."""
    send(engine, team, track("kim", "Opened", 0))
    customer = customer_of(client, team, "kim")
    url = f"/api/v1/customers/{customer}/stream"
    first = GunicornServer(tmp_path_factory.mktemp("stream-first"))
    with first:
        stream = requests.get(first.url + url, headers=team.bearer(team.read), stream=True, timeout=60)
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines) == b"retry: 2000"
        send(engine, team, track("kim", "Before the stop", 1))
        [(last_id, name)] = _items(lines, 1)
        assert name == "Before the stop"
        first.processes[0].send_signal(signal.SIGTERM)
        # The stream ends as a stream does, its last chunk sent (a worker killed at the
        # graceful timeout would cut it: "Response ended prematurely").
        assert [line for line in lines if line] == []
        first.processes[0].kill()  # the rest of the stop is gunicorn's, not the stream's
    send(engine, team, track("kim", "While no server ran", 2))
    with GunicornServer(tmp_path_factory.mktemp("stream-second")) as second:
        headers = {**team.bearer(team.read), "Last-Event-ID": last_id}
        resumed = requests.get(second.url + url, headers=headers, stream=True, timeout=60)
        lines = resumed.iter_lines()
        send(engine, team, track("kim", "After the restart", 3))
        assert [name for _, name in _items(lines, 2)] == ["While no server ran", "After the restart"]
        resumed.close()


def test_a_position_reads_back_exactly_as_it_was_sent() -> None:
    """Last-Event-ID names an item exactly (integer microseconds, no float on the way):
    off by one microsecond, a resumed stream would send that item again or skip one."""
    base = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
    for micros in (0, 1, 999_999, 123_457, 900_000_001, 86_400_000_000 * 3_650 + 7):
        position = StreamPosition(base + timedelta(microseconds=micros), 42)
        assert StreamPosition.parse(position.text()) == position
    assert StreamPosition.parse(StreamPosition(datetime(1970, 1, 1, tzinfo=UTC), 0).text()) is not None


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on `sock` until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_stopping_worker_closes_its_connections_and_exits_without_its_graceful_timeout(
    client: FlaskClient, engine: Engine, team: TeamKeys, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """gunicorn's gevent worker waits, up to its graceful timeout (20 s), until it has no
    connection left. A stream's connection, its stream ended by the stop, and a connection
    kept alive between requests would each hold it there (keep-alive is 30 s): the worker
    closes both, so it exits as soon as its streams have ended, and a client resuming
    its stream never resumes on the stopping worker."""
    send(engine, team, track("lou", "Opened", 0))
    customer = customer_of(client, team, "lou")
    with GunicornServer(tmp_path_factory.mktemp("stream-stop")) as server:
        stream, idle = connect(server, timeout=60), connect(server, timeout=60)
        with stream, idle:
            stream.sendall(
                f"GET /api/v1/customers/{customer}/stream HTTP/1.1\r\nHost: t\r\n"
                f"Authorization: Bearer {team.read}\r\n\r\n".encode()
            )
            head = b""
            while b"retry: 2000" not in head:
                head += stream.recv(65536)
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = read_answer(idle, bytearray())
            assert answer is not None and answer.status == 200
            assert "close" not in answer.headers.get("connection", "")  # kept alive, idle now
            old = web_workers(server)
            for pid in old:
                os.kill(pid, signal.SIGTERM)  # gunicorn starts a new worker for each
            assert (head + _until_closed(stream)).endswith(b"\r\n0\r\n\r\n")  # ended, then closed
            assert _until_closed(idle) == b""
        wait_for("the stopped workers gone", lambda: not (web_workers(server) & old), seconds=60)
        log = server.log_text()
        assert log.count("Worker exiting") >= len(old)
        assert "Worker graceful timeout" not in log


def test_a_stream_opened_on_a_stopping_process_ends_at_once(app: Flask, engine: Engine) -> None:
    """A request that reached the process as it stopped: its stream ends at once (the client
    resumes on another process) instead of waiting on a listener that no longer listens."""
    listener = Listener(libpq_conninfo(engine), engine)
    listener.end_all()  # what SIGTERM does (app/serving/worker.py)
    subscription = listener.subscribe(1, 1)
    assert subscription.notices.get(timeout=5) == END


# -- the console's page stream (app/console/live.py): what its EventSource is answered --


def test_the_pages_stream_reopened_after_the_key_was_revoked_ends_and_names_sign_in(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    """A page's EventSource that reconnects (its worker restarted) after the key was revoked:
    an `end` event, which sends the page to sign-in; a 401 would stop the EventSource for
    good and leave the page open, silently no longer live."""
    send(engine, team, track("max", "Opened", 0))
    customer = customer_of(client, team, "max")
    with engine.begin() as connection:
        made = create_key(connection, team.id, "agent", ["read"], datetime.now(UTC))
    assert console_sign_in(client, made.secret).status_code == 303
    with engine.begin() as connection:
        revoke_key(connection, team.id, made.key.id, datetime.now(UTC))
    response = client.get(f"/console/customers/{customer}/live", headers={"Last-Event-ID": "1-1"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert "\nevent: end\n" in body and json.loads(body.split("data: ", 1)[1])["code"] == "signed_out"
    assert response.headers["Cache-Control"] == "no-store"  # the console's own headers stay


def test_the_pages_stream_refused_as_busy_tells_the_eventsource_when_to_come_back(
    client: FlaskClient, app: Flask, engine: Engine, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's share of streams is taken: a `retry:` of the Retry-After and an answer
    that ends, so the EventSource reconnects then (keeping its Last-Event-ID); a 503 would
    stop it for good."""
    send(engine, team, track("ned", "Opened", 0))
    customer = customer_of(client, team, "ned")
    assert console_sign_in(client, team.read).status_code == 303
    listener = app.extensions["timeline_live"].get()
    monkeypatch.setattr(listener, "open", app.extensions["timeline"].settings.live_streams_per_process)
    response = client.get(f"/console/customers/{customer}/live")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    assert body.startswith(f"retry: {stream_module._BUSY_RETRY_SECONDS * 1000}\n")
    assert "event:" not in body
