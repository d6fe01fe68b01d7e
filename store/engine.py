"""Connections to Postgres and Redis, built explicitly and passed in (no globals)."""

from __future__ import annotations

from redis import Redis
from sqlalchemy import Engine, create_engine

from store.settings import Settings


def make_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    """An engine for one process; never share one across a fork."""
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 3},
    )


def make_redis(settings: Settings) -> Redis:
    """A Redis client with short timeouts: a dead Redis must not stall ingest."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=15,
    )
