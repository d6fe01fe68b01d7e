"""The process's configuration: one `Settings`, read from the environment once.

Whoever builds a process builds its Settings, once, and passes it down: `create_app`
(the web app; a test passes its own as `config["SETTINGS"]`), the worker's `main`, and
gunicorn's worker class for its read deadlines (`app/serving/worker.py`, in each web process).
Nothing reads `os.environ` after that, and nothing writes it: gunicorn hands its
workers their environment through its own `raw_env` setting (`app/serving/gunicorn_config.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def sqlalchemy_url(url: str) -> str:
    """Make a libpq-style URL use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _whole(env: Mapping[str, str], name: str, default: int, least: int = 1) -> int:
    """A count from the environment; one that is not a whole number >= `least` is `default`."""
    raw = env.get(name, "")
    return max(least, int(raw)) if raw.isascii() and raw.isdigit() else default


# The longest retention a team or the operator may set, in days (ten years): beyond it,
# "keep everything" (no retention) says what is meant.
MAX_RETENTION_DAYS = 3650


def _retention_days(env: Mapping[str, str]) -> int | None:
    """RETENTION_DAYS: unset or empty keeps everything; anything but 1..MAX is refused at
    start-up (a typo must not silently mean "keep for ever", nor "erase everything")."""
    raw = env.get("RETENTION_DAYS", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_RETENTION_DAYS:
        raise RuntimeError(
            f"RETENTION_DAYS={raw!r}: give a whole number of days from 1 to {MAX_RETENTION_DAYS}, "
            "or leave it unset to keep every event"
        )
    return int(raw)


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    # RQ queue for fold jobs and the prefix of our own Redis keys; tests isolate on them.
    fold_queue: str = "fold"
    redis_prefix: str = "tl:"
    # Ingest budgets per team (app/ingest/ratelimit.py; docs/rate-limits.md derives the defaults: a
    # quarter of what the Procfile's deployment, two web processes and a fold worker on two
    # cores, was measured to take end to end, stored and folded). Refused events and bytes
    # are charged as well as accepted ones.
    # Events, requests and body bytes per second, each with its burst; 0 turns one off.
    ingest_rate_limit: float = 2500.0
    ingest_rate_burst: float = 5000.0
    ingest_request_limit: float = 350.0
    ingest_request_burst: float = 700.0
    ingest_byte_limit: float = 2.0 * 2**20
    ingest_byte_burst: float = 4.0 * 2**20
    # An ingest 429 is answered after this pause (its Retry-After, at most this), so a
    # client that resends at once cannot keep the CPU busy with refusals; 0 answers at once.
    ingest_refusal_hold_seconds: float = 1.0
    # A team's ingest requests parsed and stored at once in one web process; its others
    # wait their turn (app/ingest/ratelimit.py `TeamTurns`). 0: no bound.
    ingest_team_concurrency: int = 4
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
    # Fair turns in the fold (docs/fold.md, "Turns"): while another fold job waits, a fold
    # job folds batches until this long has passed (at least one batch), then queues its
    # team's successor at the back of the queue. 0.1 s: one batch, two when batches are
    # fast, so RQ's ~7 ms per job stays a few percent of a turn. 0: always one batch.
    fold_turn_seconds: float = 0.1
    # How many web processes share the ingest limit (gunicorn's workers: WEB_CONCURRENCY).
    web_processes: int = 1
    # Where prometheus_client's processes keep their counters; None: this process's own.
    prometheus_multiproc_dir: str | None = None
    # A web process's database pool, and how long it trusts a cached API key (docs/keys.md).
    db_pool_size: int = 5
    key_cache_ttl_seconds: float = 0.5
    # Postgres budgets of a web process (docs/serving.md, "Postgres budgets"): reads have a
    # pool of their own and a short wait for it; each kind of statement has a time bound in
    # milliseconds; at most `expensive_reads_per_team` expensive reads per team per process.
    db_read_pool_size: int = 4
    db_read_pool_wait_seconds: float = 0.5
    db_read_timeout_ms: int = 5000
    db_write_timeout_ms: int = 15000
    db_health_timeout_ms: int = 2000
    expensive_reads_per_team: int = 2
    # gunicorn's worker (app/serving/worker.py, docs/serving.md): a request's head (request line
    # and headers) must arrive within this many seconds of its first byte, its body within
    # this many seconds of the end of its head (500 KiB, the largest body ingest takes,
    # needs ~17 KiB/s). Tests shorten them.
    request_head_seconds: float = 10.0
    request_body_seconds: float = 30.0
    # Live streams (`/customers/{id}/stream`) one web process holds at most: a tenth of its
    # 10,000 connection slots, so open pages never take the slots ingest needs.
    live_streams_per_process: int = 1000
    # A quiet live stream sends a comment line this often, so proxies keep it open, and
    # looks again then at its key or console session (docs/read-api.md, "Live"). Tests shorten it.
    live_heartbeat_seconds: float = 15.0
    # The console (docs/console.md): an optional pepper mixed into every session's signing
    # secret, and the cookies' `Secure` flag (set it behind HTTPS).
    console_secret: str = ""
    console_cookie_secure: bool = False
    # The operator's retention in days (docs/retention.md): events older than this are
    # erased, and a team may only shorten it; None keeps every event (as before).
    retention_days: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
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
            ingest_rate_limit=float(env.get("INGEST_RATE_LIMIT", cls.ingest_rate_limit)),
            ingest_rate_burst=float(env.get("INGEST_RATE_BURST", cls.ingest_rate_burst)),
            ingest_request_limit=float(env.get("INGEST_REQUEST_LIMIT", cls.ingest_request_limit)),
            ingest_request_burst=float(env.get("INGEST_REQUEST_BURST", cls.ingest_request_burst)),
            ingest_byte_limit=float(env.get("INGEST_BYTE_LIMIT", cls.ingest_byte_limit)),
            ingest_byte_burst=float(env.get("INGEST_BYTE_BURST", cls.ingest_byte_burst)),
            ingest_refusal_hold_seconds=float(
                env.get("INGEST_REFUSAL_HOLD_SECONDS", cls.ingest_refusal_hold_seconds)
            ),
            ingest_team_concurrency=int(env.get("INGEST_TEAM_CONCURRENCY", cls.ingest_team_concurrency)),
            api_rate_limit=float(env.get("API_RATE_LIMIT", "100")),
            api_rate_burst=float(env.get("API_RATE_BURST", "500")),
            metrics_token=env.get("METRICS_TOKEN", ""),
            metrics_refresh_seconds=float(env.get("METRICS_REFRESH_SECONDS", "5")),
            fold_batch_size=int(env.get("FOLD_BATCH_SIZE", "1000")),
            sweep_interval_seconds=float(env.get("SWEEP_INTERVAL_SECONDS", "5")),
            fold_turn_seconds=max(0.0, float(env.get("FOLD_TURN_SECONDS", "0.1"))),
            web_processes=_whole(env, "WEB_CONCURRENCY", 1),
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            db_pool_size=_whole(env, "DB_POOL_SIZE", 5),
            key_cache_ttl_seconds=float(env.get("KEY_CACHE_TTL", "0.5")),
            db_read_pool_size=_whole(env, "DB_READ_POOL_SIZE", 4),
            db_read_pool_wait_seconds=float(env.get("DB_READ_POOL_WAIT", "0.5")),
            db_read_timeout_ms=_whole(env, "DB_READ_TIMEOUT_MS", 5000),
            db_write_timeout_ms=_whole(env, "DB_WRITE_TIMEOUT_MS", 15000),
            db_health_timeout_ms=_whole(env, "DB_HEALTH_TIMEOUT_MS", 2000),
            expensive_reads_per_team=_whole(env, "EXPENSIVE_READS_PER_TEAM", 2),
            request_head_seconds=float(env.get("REQUEST_HEAD_SECONDS", "10")),
            request_body_seconds=float(env.get("REQUEST_BODY_SECONDS", "30")),
            live_streams_per_process=_whole(env, "LIVE_STREAMS_PER_PROCESS", 1000),
            live_heartbeat_seconds=max(  # 0 would spin, a look at the session each turn
                0.1, float(env.get("LIVE_HEARTBEAT_SECONDS", cls.live_heartbeat_seconds))
            ),
            console_secret=env.get("CONSOLE_SECRET", ""),
            console_cookie_secure=env.get("CONSOLE_COOKIE_SECURE", "") in ("1", "true", "yes"),
            retention_days=_retention_days(env),
        )
