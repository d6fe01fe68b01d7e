"""The worker process's own connections, made once by the process that runs jobs.

RQ calls jobs by import path, so a job finds its connections here. Whoever builds the
process configures them once, from its `Settings`: the worker entry point (`python -m
workers`) at start, a test's fixture for the jobs it runs in its own process. A job run
where nobody did fails at once, saying so, instead of reading the environment itself.
The engine is never shared across a fork: SimpleWorker runs jobs in the process that
made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis
from sqlalchemy import Engine

from service.fold_queue import FoldQueue
from service.settings import Settings
from store.engine import make_engine, make_redis


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    redis: Redis
    fold_queue: FoldQueue = field(init=False)

    def __post_init__(self) -> None:
        self.fold_queue = FoldQueue.from_settings(self.redis, self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """The worker process's connections (a small pool: jobs run one at a time, plus the sweep)."""
        return cls(settings, make_engine(settings, pool_size=2), make_redis(settings))


_current: Runtime | None = None


def configure(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    """The runtime this process configured; a job run before that is an error."""
    if _current is None:
        raise RuntimeError(
            "no worker runtime: the process that runs fold jobs configures one first "
            "(`configure(Runtime.from_settings(Settings.from_env()))`, as `python -m workers` does)"
        )
    return _current
