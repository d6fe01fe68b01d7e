"""Liveness, readiness and metrics (SPEC §6).

`/readyz` answers from what this process saw at most a second ago, and says only
`ok`, `behind` or `unavailable` per check: no error class, host or version, since it
is open to whoever can reach the port. `/metrics` wants a bearer token when
METRICS_TOKEN is set, and its fold figures are read at most every
METRICS_REFRESH_SECONDS (app/serving/metrics.py). docs/operations.md has the settings.

Both read Postgres through the health engine (`resources().health`, two connections of
their own, `DB_HEALTH_TIMEOUT_MS` a statement): busy read or write pools do not make readiness
say Postgres is down (docs/serving.md, "Postgres budgets").
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from rq import Queue
from sqlalchemy import text

from app.errors import ApiError
from app.resources import Resources, resources
from app.serving import metrics
from store.fold_failures import count_failing_deletes, count_set_aside
from store.schema_version import is_current

bp = Blueprint("health", __name__)

READY_CACHE_SECONDS = 1.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


class Readiness:
    """This process's last readiness check, redone at most once a second.

    Migrations only move forward while the process runs, so once they are seen current
    they are not read again (that check loads every migration script).
    """

    def __init__(self) -> None:
        self._checks: dict[str, str] | None = None
        self._at = 0.0
        self._migrations_current = False
        self._lock = threading.Lock()

    def checks(self, res: Resources) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            if self._checks is None or not 0 <= now - self._at < READY_CACHE_SECONDS:
                self._checks = self._check(res)
                self._at = time.monotonic()
            return self._checks

    def _check(self, res: Resources) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            with res.health.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["postgres"] = "ok"
            if not self._migrations_current:
                self._migrations_current = is_current(res.health)
            checks["migrations"] = "ok" if self._migrations_current else "behind"
        except Exception:
            checks["postgres"] = "unavailable"
            checks["migrations"] = "unknown"
        try:
            res.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
        return checks


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    readiness: Readiness = current_app.extensions["readiness"]
    checks = readiness.checks(resources())
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503


def read_fold_figures(res: Resources) -> metrics.FoldFigures:
    """The unfolded backlog (Postgres) and the fold queue's depth (Redis); None if unreadable."""
    backlog: int | None = None
    lag: float | None = None
    depth: int | None = None
    set_aside: int | None = None
    failing_deletes: int | None = None
    try:
        with res.health.begin() as connection:
            count, oldest = connection.execute(
                text(
                    "SELECT count(*), EXTRACT(EPOCH FROM now() - min(received_at)) "
                    "FROM events WHERE folded_at IS NULL"
                )
            ).one()
            set_aside = count_set_aside(connection)
            failing_deletes = count_failing_deletes(connection)
        backlog, lag = int(count), float(oldest or 0)
    except Exception:
        pass
    try:
        depth = int(Queue(res.settings.fold_queue, connection=res.redis).count)
    except Exception:
        pass
    return metrics.FoldFigures(
        backlog=backlog,
        lag_seconds=lag,
        queue_depth=depth,
        set_aside=set_aside,
        failing_deletes=failing_deletes,
    )


@bp.get("/metrics")
def prometheus() -> Response:
    res = resources()
    if not metrics.check_metrics_token(res.settings.metrics_token, request.headers.get("Authorization", "")):
        raise ApiError(
            401,
            "invalid_metrics_token",
            "/metrics needs Authorization: Bearer METRICS_TOKEN (the token this deployment set).",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    cache: metrics.FoldFiguresCache = current_app.extensions["fold_figures"]
    return metrics.render(cache.figures().exposition())


def init_app(app: Flask) -> None:
    res: Resources = app.extensions["timeline"]
    app.extensions["readiness"] = Readiness()
    app.extensions["fold_figures"] = metrics.FoldFiguresCache(
        lambda: read_fold_figures(res), res.settings.metrics_refresh_seconds
    )
    app.register_blueprint(bp)
