"""Liveness, readiness and metrics (SPEC §6)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify
from rq import Queue
from sqlalchemy import text

from app import metrics
from app.resources import resources
from store.migrate import is_current

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    res = resources()
    checks: dict[str, str] = {}
    try:
        checks["migrations"] = "ok" if is_current(res.engine) else "behind"
        checks["postgres"] = "ok"
    except Exception as error:
        checks["postgres"] = f"unavailable ({type(error).__name__})"
    try:
        res.redis.ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unavailable ({type(error).__name__})"
    ready = all(value == "ok" for value in checks.values()) and "migrations" in checks
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503


@bp.get("/metrics")
def prometheus() -> Response:
    res = resources()
    lines: list[str] = []
    try:
        with res.engine.connect() as connection:
            backlog, oldest = connection.execute(
                text(
                    "SELECT count(*), EXTRACT(EPOCH FROM now() - min(received_at)) "
                    "FROM events WHERE folded_at IS NULL"
                )
            ).one()
        lines += [
            "# HELP fold_backlog_events Stored events not folded yet",
            "# TYPE fold_backlog_events gauge",
            f"fold_backlog_events {backlog}",
            "# HELP fold_lag_seconds Age of the oldest unfolded event",
            "# TYPE fold_lag_seconds gauge",
            f"fold_lag_seconds {float(oldest or 0):.3f}",
        ]
    except Exception:
        pass
    try:
        depth = Queue(res.settings.fold_queue, connection=res.redis).count
        lines += [
            "# HELP fold_queue_depth Fold jobs waiting in RQ",
            "# TYPE fold_queue_depth gauge",
            f"fold_queue_depth {depth}",
        ]
    except Exception:
        pass
    return metrics.render("\n".join(lines) + "\n" if lines else "")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
