"""The process's connections (engine, Redis, key cache), built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from redis import Redis
from sqlalchemy import Engine

from store.apikeys import KeyCache
from store.engine import make_engine, make_redis
from store.settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    redis: Redis
    keys: KeyCache


def init_app(app: Flask, settings: Settings) -> None:
    engine = make_engine(settings, pool_size=int(app.config.get("DB_POOL_SIZE", 5)))
    app.extensions["timeline"] = Resources(
        settings=settings,
        engine=engine,
        redis=make_redis(settings),
        keys=KeyCache(engine, ttl=float(app.config.get("KEY_CACHE_TTL", 0.5))),
    )


def resources() -> Resources:
    """The current app's resources."""
    found: Resources = current_app.extensions["timeline"]
    return found
