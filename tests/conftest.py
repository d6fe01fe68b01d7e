"""Shared fixtures: real Postgres and Redis, migrated once per session.

With DATABASE_URL / REDIS_URL set, the tests use those servers; unset, they start
embedded ones (SPEC §6). Each session gets a fresh database and its own RQ queue and
Redis key prefix, so sessions can run side by side. Each test gets its own team: every
query is scoped by team, so tests do not see each other's data.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import Engine, create_engine, make_url, text

from app import create_app
from service.fold_queue import FoldQueue
from service.settings import Settings, sqlalchemy_url
from store.apikeys import create_key, create_team
from store.engine import make_engine, make_redis
from store.migrate import upgrade
from tests.node import install_ahead, stop_installs
from workers import runtime

# ../shared beside the clone (SPEC: "payloads exactly as Segment documents them").
FIXTURES = Path(
    os.environ.get("SEGMENT_FIXTURES")
    or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "segment"
)
if not FIXTURES.is_dir():
    raise pytest.UsageError(
        f"Segment fixtures not found at {FIXTURES}: the tests expect ../shared beside the "
        "clone (or SEGMENT_FIXTURES pointing at the folder)."
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """The node packages the selected tests need (their modules' `NODE_PACKAGES`), installed
    in the background while the tests before them run (tests/node.py)."""
    if session.config.option.collectonly:
        return
    folders: list[Path] = []
    for item in session.items:
        folders += getattr(getattr(item, "module", None), "NODE_PACKAGES", ())
    install_ahead(folders)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_installs()


# Property tests fail on a real counter-example, never on the machine's load or a lucky
# draw: no per-example deadline anywhere, and under CI the same examples every run
# (derandomized), so a red CI is a bug that reproduces. Locally they explore afresh.
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _fresh_database(server_url: str) -> str:
    name = f"tl_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(sqlalchemy_url(server_url)).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server = os.environ.get("DATABASE_URL")
    if not server:
        from devstack.embedded import start_postgres

        server = start_postgres(Path(tempfile.mkdtemp(prefix="tl-pg-")) / "data")
    url = _fresh_database(server)
    upgrade(url)
    os.environ["DATABASE_URL"] = url  # for processes the tests start
    yield url
    admin = create_engine(sqlalchemy_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    embedded = None
    if not url:
        from devstack.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="tl-redis-"))).start()
        url = embedded.url
    os.environ["REDIS_URL"] = url
    yield url
    if embedded:
        embedded.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    session = uuid.uuid4().hex[:8]
    os.environ["FOLD_QUEUE"] = f"fold-test-{session}"
    os.environ["REDIS_PREFIX"] = f"tl-test-{session}:"
    return Settings.from_env()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis(settings: Settings) -> Redis:
    return make_redis(settings)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "SETTINGS": settings})
    yield app
    app.extensions["timeline"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def quick_heartbeat(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's live streams beat every 0.1 s instead of 15 (`LIVE_HEARTBEAT_SECONDS`), so
    what a stream does at a heartbeat (look again at the key or session) comes at once."""
    timeline = app.extensions["timeline"]
    monkeypatch.setattr(timeline, "settings", replace(timeline.settings, live_heartbeat_seconds=0.1))


@pytest.fixture(scope="session", autouse=True)
def worker_runtime(settings: Settings, engine: Engine, redis: Redis) -> runtime.Runtime:
    """Jobs run in this process (SimpleWorker) use the test connections."""
    rt = runtime.Runtime(settings, engine, redis)
    runtime.configure(rt)
    return rt


@pytest.fixture
def fold_queue(redis: Redis, settings: Settings) -> FoldQueue:
    """The session's fold queue (its own RQ queue and key prefix)."""
    return FoldQueue.from_settings(redis, settings)


@dataclass
class TeamKeys:
    """A fresh team and keys for it, as plaintext secrets."""

    id: int
    admin: str
    ingest: str
    read: str

    @staticmethod
    def basic(secret: str) -> dict[str, str]:
        token = base64.b64encode(f"{secret}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    @staticmethod
    def bearer(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}


def make_team(engine: Engine, name: str = "test team") -> TeamKeys:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        team, admin = create_team(connection, name, now)
        ingest = create_key(connection, team.id, "ingest", ["ingest"], now)
        read = create_key(connection, team.id, "read", ["read"], now)
    return TeamKeys(id=team.id, admin=admin.secret, ingest=ingest.secret, read=read.secret)


@pytest.fixture
def team(engine: Engine) -> TeamKeys:
    return make_team(engine)


@pytest.fixture
def other_team(engine: Engine) -> TeamKeys:
    return make_team(engine, "other team")


def run_fold_worker(redis: Redis, settings: Settings) -> None:
    """Run every queued fold job in this process, as `python -m workers` would."""
    queue = Queue(settings.fold_queue, connection=redis)
    SimpleWorker([queue], connection=redis).work(burst=True, logging_level="WARNING")


@pytest.fixture
def fold(redis: Redis, settings: Settings) -> Any:
    return lambda: run_fold_worker(redis, settings)


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def fixture_names() -> list[str]:
    return sorted(path.name for path in FIXTURES.glob("*.json"))
