"""Postgres budgets (issue 20) under real gunicorn and Postgres: reads cannot take ingest's
connections, a read has a time bound and Postgres really stops it, a read whose client
left is cancelled, and one team's expensive reads are bounded per process.

The reads are made slow by what makes any read slow in production without a line of test
code in the app: this test holds an ACCESS EXCLUSIVE lock on `customers` (as a migration
or `VACUUM FULL` would), so every read of a customer waits in Postgres, on its connection,
for as long as the test wants. The time bounds are the app's own (statement_timeout
counts lock waits); every wait here polls for its condition under a generous deadline.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import requests
from sqlalchemy import Engine, make_url

from tests.app.test_ingest import track
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer

pytestmark = pytest.mark.slow

DEADLINE_SECONDS = 20.0

# Backends of this database waiting on a lock: the reads stuck behind the test's lock.
_WAITING_READS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND state = 'active' AND wait_event_type = 'Lock'
"""


def libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def customers_locked(database_url: str) -> Iterator[psycopg.Connection[tuple[int]]]:
    """Hold ACCESS EXCLUSIVE on `customers` until the block ends; yields a second connection
    to watch pg_stat_activity with."""
    url = libpq_url(database_url)
    with psycopg.connect(url) as locker, psycopg.connect(url, autocommit=True) as watcher:
        locker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        try:
            yield watcher
        finally:
            locker.rollback()


def waiting_reads(watcher: psycopg.Connection[tuple[int]]) -> int:
    row = watcher.execute(_WAITING_READS).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_SECONDS:.0f} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def tenant(engine: Engine) -> TeamKeys:
    return make_team(engine, "tenant")


@pytest.fixture
def neighbour(engine: Engine) -> TeamKeys:
    return make_team(engine, "neighbour")


def _server(tmp_path: Path, **env: str) -> GunicornServer:
    # A `requests` answer still referenced keeps its connection open, and gunicorn's graceful
    # stop waits for such an idle kept-alive connection until its keep-alive time (30 s, past
    # the 10 s the stop grants: ~10 s a test). Keep-alive is not these tests' subject, and no
    # connection here is reused: idle ones close after a second.
    return GunicornServer(tmp_path, {"GUNICORN_KEEPALIVE": "1", **env})


def test_one_teams_slow_reads_leave_another_teams_ingest_and_readyz_alone(
    tmp_path: Path, database_url: str, tenant: TeamKeys, neighbour: TeamKeys
) -> None:
    reads = 48  # both processes' pools were 5 + 5 each; the issue took them with 24
    with (  # left in reverse: the lock goes first, so the waiting reads finish
        ThreadPoolExecutor(reads) as pool,
        _server(tmp_path, DB_READ_TIMEOUT_MS="60000") as server,
        customers_locked(database_url) as watcher,
    ):

        def slow_read(n: int) -> requests.Response:
            return requests.get(
                f"{server.url}/api/v1/customers/{n + 1}/external_ids",
                headers=tenant.bearer(tenant.read),
                timeout=DEADLINE_SECONDS + 10,
            )

        answers = [pool.submit(slow_read, n) for n in range(reads)]
        wait_for(
            lambda: waiting_reads(watcher) + sum(answer.done() for answer in answers) >= reads,
            "each of the tenant's reads waits in Postgres or was answered",
        )

        ingest = {**neighbour.basic(neighbour.ingest), "Content-Type": "application/json"}
        statuses = []
        for n in range(12):
            try:
                statuses.append(
                    requests.post(
                        f"{server.url}/v1/track",
                        data=json.dumps(track(f"budget-{n}")),
                        headers=ingest,
                        timeout=8,
                    ).status_code
                )
            except requests.Timeout:
                statuses.append(0)
        ready = [requests.get(f"{server.url}/readyz", timeout=8) for _ in range(4)]
        assert statuses == [200] * 12  # the neighbour's ingest is served while the reads wait
        assert [r.status_code for r in ready] == [200] * 4, ready[-1].text
        assert all(r.json()["checks"]["postgres"] == "ok" for r in ready)

        bounced = [answer.result() for answer in answers if answer.done()]
        assert bounced and all(r.status_code == 429 for r in bounced)
        assert bounced[0].json()["code"] == "too_many_expensive_reads"
        assert bounced[0].headers["Retry-After"] == "1"
        assert waiting_reads(watcher) <= 4  # two per team per process at most
    assert {answer.result().status_code for answer in answers} <= {404, 429}


def test_a_read_past_its_time_bound_answers_503_and_postgres_stopped_it(
    tmp_path: Path, database_url: str, tenant: TeamKeys
) -> None:
    with (
        _server(tmp_path, DB_READ_TIMEOUT_MS="500") as server,
        customers_locked(database_url) as watcher,
    ):
        try:
            answer = requests.get(
                f"{server.url}/api/v1/customers/1/feed?limit=200",
                headers=tenant.bearer(tenant.read),
                timeout=DEADLINE_SECONDS,
            )
        except requests.Timeout:
            pytest.fail("the read had no time bound: it waited as long as the lock was held")
        assert answer.status_code == 503
        body = answer.json()
        assert body["code"] == "read_timeout"
        assert "limit" in body["message"] and "since" in body["message"]  # what to narrow
        wait_for(lambda: waiting_reads(watcher) == 0, "Postgres stopped the read's statement")


def test_a_read_whose_client_left_is_cancelled_in_postgres(
    tmp_path: Path, database_url: str, tenant: TeamKeys
) -> None:
    with (
        _server(tmp_path, WEB_CONCURRENCY="1", DB_READ_TIMEOUT_MS="60000") as server,
        customers_locked(database_url) as watcher,
    ):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        auth = tenant.bearer(tenant.read)["Authorization"]
        client.sendall(
            f"GET /api/v1/customers/1/feed HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\r\n".encode()
        )
        wait_for(lambda: waiting_reads(watcher) == 1, "the read waits in Postgres")
        client.close()
        wait_for(lambda: waiting_reads(watcher) == 0, "the read's statement was cancelled")


def test_a_busy_read_pool_answers_503_read_capacity_busy_not_storage_unavailable(
    tmp_path: Path, database_url: str, tenant: TeamKeys, neighbour: TeamKeys
) -> None:
    with (
        ThreadPoolExecutor(1) as pool,
        _server(tmp_path, WEB_CONCURRENCY="1", DB_READ_POOL_SIZE="1", DB_READ_TIMEOUT_MS="60000") as server,
        customers_locked(database_url) as watcher,
    ):
        held = pool.submit(
            requests.get,
            f"{server.url}/api/v1/customers/1",
            headers=tenant.bearer(tenant.read),
            timeout=DEADLINE_SECONDS + 10,
        )
        wait_for(lambda: waiting_reads(watcher) == 1, "the only read connection waits in Postgres")
        try:
            answer = requests.get(
                f"{server.url}/api/v1/customers/2", headers=neighbour.bearer(neighbour.read), timeout=10
            )
        except requests.Timeout:
            pytest.fail("a read waited for a connection without bound")
        assert answer.status_code == 503
        assert answer.json()["code"] == "read_capacity_busy"
        assert answer.headers["Retry-After"] == "1"
        assert not held.done()
    assert held.result().status_code == 404  # once the lock went, the held read finished
