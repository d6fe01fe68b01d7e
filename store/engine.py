"""Connections to Postgres and Redis, built explicitly and passed in (no globals).

A web process draws on three Postgres budgets (docs/serving.md, "Postgres budgets"): the
write engine (ingest, keys, admin), the read engine (the agents' reads, `make_read_engine`)
and a small health engine (`/readyz`, `/metrics`), each its own pool with its own
statement timeout, so exhausting one never takes another's connections.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from service.settings import Settings


class ReadCapacityBusy(PoolTimeoutError):
    """Every connection of the read budget stayed busy for the whole (short) pool wait."""


class ReadPool(QueuePool):
    """The read engine's pool: its pool timeout raises `ReadCapacityBusy`, which the web
    app answers as a 503 that says the read capacity is busy, not that storage is down."""

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except ReadCapacityBusy:
            raise
        except PoolTimeoutError as busy:
            raise ReadCapacityBusy(str(busy)) from None


def _connect_args(
    url: str, name: str, statement_timeout_ms: int | None, connect_timeout: int
) -> dict[str, Any]:
    """libpq arguments: the pool's name in pg_stat_activity and its statement timeout,
    set at connect time so no statement on the pool's connections goes unbounded. A name
    the URL already gives (`?application_name=`, as bin/faults names each worker) wins."""
    args: dict[str, Any] = {"connect_timeout": connect_timeout}
    if "application_name" not in make_url(url).query:
        args["application_name"] = name
    if statement_timeout_ms:
        args["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return args


def make_engine(
    settings: Settings,
    *,
    pool_size: int = 5,
    statement_timeout_ms: int | None = None,
    name: str = "timeline",
) -> Engine:
    """An engine for one process; never share one across a fork.

    `statement_timeout_ms`: Postgres cancels any statement of this engine past it (None:
    the server's own setting, as the fold worker's long batches want).
    """
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args=_connect_args(settings.database_url, name, statement_timeout_ms, 3),
    )


def make_read_engine(settings: Settings) -> Engine:
    """The read budget of a web process: `db_read_pool_size` connections, no overflow, a
    short wait for one (`ReadCapacityBusy` past it) and `db_read_timeout_ms` a statement."""
    return create_engine(
        settings.database_url,
        poolclass=ReadPool,
        pool_size=settings.db_read_pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=settings.db_read_pool_wait_seconds,
        connect_args=_connect_args(settings.database_url, "timeline-read", settings.db_read_timeout_ms, 3),
    )


def make_health_engine(settings: Settings) -> Engine:
    """Two connections of its own for `/readyz` and `/metrics`: a busy read or write pool
    cannot make readiness say Postgres is down. Short waits and `db_health_timeout_ms`."""
    return create_engine(
        settings.database_url,
        pool_size=2,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=2,
        connect_args=_connect_args(
            settings.database_url, "timeline-health", settings.db_health_timeout_ms, 2
        ),
    )


def make_redis(settings: Settings) -> Redis:
    """A Redis client with short timeouts: a dead Redis must not stall ingest."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=15,
    )
