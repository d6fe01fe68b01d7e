"""The one JSON error envelope, `{"message", "code", "errors"}`, and where it is rendered.

A storage outage is a 503 with Retry-After (Segment retries it), never a 500. A busy
read budget and a read past its time bound are 503s that say so (docs/serving.md,
"Postgres budgets"), not a storage outage.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from psycopg.errors import QueryCanceled
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

# Defined apart so that gunicorn's arbiter, which loads the worker class, need not import
# redis (app/api_error.py says why); re-exported here, where the app's modules find it.
from app.api_error import ApiError as ApiError
from service.waiting import current_client_watch
from store.engine import ReadCapacityBusy

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10
READ_BUSY_RETRY_AFTER_SECONDS = 1
# Set on `flask.g` by the read budget (app/resources.py) when a request reads through it.
READS_MARK = "timeline_reads"


def error_response(error: ApiError) -> Response:
    body: dict[str, Any] = {"message": error.message, "code": error.code}
    if error.errors:
        body["errors"] = error.errors
    response = jsonify(body)
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def storage_unavailable(what: str = "Storage") -> ApiError:
    return ApiError(
        503,
        "storage_unavailable",
        f"{what} is unavailable; nothing was stored. Retry after {RETRY_AFTER_SECONDS} seconds.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def read_capacity_busy() -> ApiError:
    return ApiError(
        503,
        "read_capacity_busy",
        "Every read connection of this server is busy with other reads (storage is fine); "
        f"retry after {READ_BUSY_RETRY_AFTER_SECONDS} second.",
        headers={"Retry-After": str(READ_BUSY_RETRY_AFTER_SECONDS)},
    )


def read_timeout() -> ApiError:
    return ApiError(
        503,
        "read_timeout",
        "This read took longer than this server allows and was stopped; ask for less: a "
        "smaller limit, a since/until window or event filters on the feed, include= on traits.",
    )


def client_gone() -> ApiError:
    """Nobody reads this answer: the client left, and its statement was cancelled."""
    return ApiError(499, "client_closed_request", "The client closed the connection before the answer.")


def _is_connection_problem(error: DBAPIError) -> bool:
    return bool(error.connection_invalidated) or isinstance(error, OperationalError)


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(ApiError(error.code or 500, code, error.description or code))

    @app.errorhandler(ReadCapacityBusy)
    def read_pool_busy(error: ReadCapacityBusy) -> Response:
        log.warning("read capacity busy")
        return error_response(read_capacity_busy())

    @app.errorhandler(PoolTimeoutError)
    def pool_timeout(error: PoolTimeoutError) -> Response:
        log.warning("database pool exhausted")
        return error_response(storage_unavailable("The database"))

    @app.errorhandler(DBAPIError)
    def database_error(error: DBAPIError) -> Response:
        if isinstance(error.orig, QueryCanceled) and g.get(READS_MARK):
            watch = current_client_watch()
            if watch is not None and watch.gone:
                return error_response(client_gone())
            log.warning("read over its statement timeout")
            return error_response(read_timeout())
        if _is_connection_problem(error):
            log.warning("database unavailable: %s", type(error.orig).__name__)
            return error_response(storage_unavailable("The database"))
        log.exception("database error")
        return error_response(ApiError(500, "internal_error", "Internal error; it has been logged."))

    @app.errorhandler(RedisError)
    def redis_error(error: RedisError) -> Response:
        log.warning("redis unavailable: %s", type(error).__name__)
        return error_response(storage_unavailable("Redis"))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(ApiError(500, "internal_error", "Internal error; it has been logged."))
