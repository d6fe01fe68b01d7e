"""Settings read from the environment, once, by whoever builds the process.

Both the web app and the worker call `Settings.from_env()` inside their factories,
never at import time, so tests can point them anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def sqlalchemy_url(url: str) -> str:
    """Make a libpq-style URL use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    # RQ queue for fold jobs and the prefix of our own Redis keys; tests isolate on them.
    fold_queue: str = "fold"
    redis_prefix: str = "tl:"
    # Per-team ingest limit in events per second (token bucket); 0 turns it off.
    ingest_rate_limit: float = 20000.0
    ingest_rate_burst: float = 40000.0
    # Per-key limit on the read and key routes, in requests per second; 0 turns it off.
    api_rate_limit: float = 100.0
    api_rate_burst: float = 500.0
    # /metrics wants `Authorization: Bearer METRICS_TOKEN` when set; open when empty.
    metrics_token: str = ""
    # How often one process reads the fold figures /metrics shows (a query each).
    metrics_refresh_seconds: float = 5.0
    # How long a fold batch is, and how often the sweep looks for unfolded events.
    fold_batch_size: int = 1000
    sweep_interval_seconds: float = 5.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        try:
            database_url = env["DATABASE_URL"]
            redis_url = env["REDIS_URL"]
        except KeyError as missing:
            raise RuntimeError(
                f"{missing.args[0]} is not set: run through bin/serve or bin/test, "
                "which start embedded servers when no URL is given"
            ) from None
        return cls(
            database_url=sqlalchemy_url(database_url),
            redis_url=redis_url,
            fold_queue=env.get("FOLD_QUEUE", "fold"),
            redis_prefix=env.get("REDIS_PREFIX", "tl:"),
            ingest_rate_limit=float(env.get("INGEST_RATE_LIMIT", "20000")),
            ingest_rate_burst=float(env.get("INGEST_RATE_BURST", "40000")),
            api_rate_limit=float(env.get("API_RATE_LIMIT", "100")),
            api_rate_burst=float(env.get("API_RATE_BURST", "500")),
            metrics_token=env.get("METRICS_TOKEN", ""),
            metrics_refresh_seconds=float(env.get("METRICS_REFRESH_SECONDS", "5")),
            fold_batch_size=int(env.get("FOLD_BATCH_SIZE", "1000")),
            sweep_interval_seconds=float(env.get("SWEEP_INTERVAL_SECONDS", "5")),
        )
