"""The process's settings and connections (engine, Redis, key cache), built once per app.

Views and helpers read configuration from `resources().settings`, never the environment.
"""

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
    """Make the app's connections from `settings`, the one config object of the process."""
    engine = make_engine(settings, pool_size=settings.db_pool_size)
    app.extensions["timeline"] = Resources(
        settings=settings,
        engine=engine,
        redis=make_redis(settings),
        keys=KeyCache(engine, ttl=settings.key_cache_ttl_seconds),
    )


def resources() -> Resources:
    """The current app's resources."""
    found: Resources = current_app.extensions["timeline"]
    return found
