"""The worker process's own connections, made once by the process that runs jobs.

RQ calls jobs by import path, so a job finds its engine here. The worker entry point
(`python -m workers`) configures it at start; a test can configure it too. The engine is
never shared across a fork: SimpleWorker runs jobs in the process that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine

from store.engine import make_engine, make_redis
from store.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    redis: Redis


_current: Runtime | None = None


def configure(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    """The configured runtime, or one built from the environment on first use."""
    global _current
    if _current is None:
        settings = Settings.from_env()
        _current = Runtime(settings, make_engine(settings, pool_size=2), make_redis(settings))
    return _current
