"""The process's settings and connections (engines, Redis, key and retention caches), built once per app.

Views and helpers read configuration from `resources().settings`, never the environment.
Postgres is three budgets (docs/serving.md, "Postgres budgets"): `engine` for ingest,
keys and admin; `reads` for the agents' reads (its own pool, a per-team bound on
expensive reads, and its statements cancelled when their client goes); `health` for
`/readyz` and `/metrics`. `imports` is the import command's (`flask events import`): no
statement bound, since its COPY stays open while it reads its source, however slow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from redis import Redis
from sqlalchemy import Connection, Engine

from app.errors import READS_MARK, ApiError
from service.fold_queue import FoldQueue
from service.settings import Settings
from service.waiting import gevent_patched, unwatch_client, watch_client
from store.apikeys import KeyCache
from store.engine import make_engine, make_health_engine, make_read_engine, make_redis
from store.retention import RetentionCache

# Reads whose cost grows with what a customer holds (Flask endpoints); `customers.traits`
# is one only with `verbose=true`.
EXPENSIVE_READS = frozenset(
    {
        "feed.feed",
        "customers.external_ids",
        "customers.event_summary",
        "console.customer",
        "console.timeline",
    }
)
EXPENSIVE_RETRY_AFTER_SECONDS = 1
_TEAM_MARK = "timeline_expensive_read_team"


def is_expensive_read() -> bool:
    """Whether the current request is one of the expensive reads."""
    if request.endpoint == "customers.traits":
        return request.args.get("verbose", "").lower() in ("true", "1", "yes", "on")
    return request.endpoint in EXPENSIVE_READS


class TeamGate:
    """At most `limit` expensive reads of one team at once in this process; one thread or
    greenlet per request, so a plain lock suffices (gevent's when patched)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._running: dict[int, int] = {}
        self._lock = threading.Lock()

    def enter(self, team_id: int) -> bool:
        with self._lock:
            running = self._running.get(team_id, 0)
            if running >= self.limit:
                return False
            self._running[team_id] = running + 1
            return True

    def leave(self, team_id: int) -> None:
        with self._lock:
            left = self._running.get(team_id, 1) - 1
            if left > 0:
                self._running[team_id] = left
            else:
                self._running.pop(team_id, None)


class Reads:
    """The read budget of a process: `connect(team_id)` is the read engine's `connect()`,
    after the team's expensive-read bound (429 over it), with the statements watched for
    the client going away (under gunicorn's gevent worker)."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.gate = TeamGate(settings.expensive_reads_per_team)

    def connect(self, team_id: int | None = None) -> Connection:
        if not has_request_context():
            return self.engine.connect()
        if team_id is not None and _TEAM_MARK not in g and is_expensive_read():
            self.enter_gate(team_id)
            setattr(g, _TEAM_MARK, team_id)
        setattr(g, READS_MARK, True)
        return self.watched(request.environ)

    def enter_gate(self, team_id: int) -> None:
        """One of the team's expensive-read places in this process (`gate.leave` gives it
        back), or the 429 that says to wait."""
        if not self.gate.enter(team_id):
            raise ApiError(
                429,
                "too_many_expensive_reads",
                f"This team already has {self.gate.limit} expensive reads (feed pages, "
                "external ids, event summaries, verbose traits, console customer pages) "
                "running here; wait for them to finish, then retry after "
                f"{EXPENSIVE_RETRY_AFTER_SECONDS} second.",
                headers={"Retry-After": str(EXPENSIVE_RETRY_AFTER_SECONDS)},
            )

    def watched(self, environ: dict[str, Any]) -> Connection:
        """A read connection whose statements are cancelled if the client of `environ` goes
        (under gunicorn's gevent worker; `unwatch_client` when the request ends)."""
        connection = self.engine.connect()
        client = environ.get("gunicorn.socket")
        driver = connection.connection.driver_connection
        if client is not None and driver is not None and gevent_patched():
            watch_client(client.fileno()).add(driver)
        return connection

    def end_request(self) -> None:
        """The request is answered: its gate place back, its client no longer watched."""
        team_id = g.pop(_TEAM_MARK, None)
        if team_id is not None:
            self.gate.leave(team_id)
        unwatch_client()


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    reads: Reads
    health: Engine
    imports: Engine
    redis: Redis
    fold_queue: FoldQueue
    keys: KeyCache
    retention: RetentionCache  # each team's retention, as ingest checks it (store/retention.py)

    def dispose(self) -> None:
        """Close every Postgres connection of the app's engines."""
        for engine in (self.engine, self.reads.engine, self.health, self.imports):
            engine.dispose()


def init_app(app: Flask, settings: Settings) -> None:
    """Make the app's connections from `settings`, the one config object of the process."""
    engine = make_engine(
        settings, pool_size=settings.db_pool_size, statement_timeout_ms=settings.db_write_timeout_ms
    )
    reads = Reads(make_read_engine(settings), settings)
    redis = make_redis(settings)
    app.extensions["timeline"] = Resources(
        settings=settings,
        engine=engine,
        reads=reads,
        health=make_health_engine(settings),
        imports=make_engine(settings, pool_size=1, name="timeline-import"),  # connects on first use
        redis=redis,
        fold_queue=FoldQueue.from_settings(redis, settings),
        keys=KeyCache(engine, ttl=settings.key_cache_ttl_seconds),
        retention=RetentionCache(engine, settings.retention_days),
    )
    app.teardown_request(lambda _error: reads.end_request())


def resources() -> Resources:
    """The current app's resources."""
    found: Resources = current_app.extensions["timeline"]
    return found
