"""Events the fold set aside (docs/fold.md, "Poison events"), for the team's admins.

`GET /api/v1/fold/failures` lists them with the database's error; `POST
/api/v1/fold/failures/retry` puts them back in the backlog once the cause is fixed (a
migration, a deploy), and wakes the team's fold.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify
from redis.exceptions import RedisError

from app.auth import authenticate
from app.edges import query_cursor_id, query_limit
from app.resources import resources
from schemas.cursors import LastId, encode_cursor
from schemas.fold import FoldFailureListSchema, FoldRetrySchema
from store.fold_failures import SetAsideEvent, list_failures, retry_failures

log = logging.getLogger(__name__)

bp = Blueprint("fold_failures", __name__, url_prefix="/api/v1")

_CURSOR = "fold-failures"
_list = FoldFailureListSchema()
_retry = FoldRetrySchema()


def _item(failure: SetAsideEvent) -> dict[str, object]:
    return {
        "event_id": failure.event_id,
        "message_id": failure.message_id,
        "type": failure.type,
        "error": {
            "error_class": failure.error_class,
            "sqlstate": failure.sqlstate,
            "message": failure.message,
        },
        "failed_at": failure.failed_at,
        "retrying": failure.retrying,
    }


@bp.get("/fold/failures")
def fold_failures() -> Response:
    """The team's events the fold set aside, oldest first.
    ---
    get:
      operationId: listFoldFailures
      summary: List the events the fold could not fold
      description: >
        Needs an admin key. An event the fold cannot write (a value the database refuses,
        such as an email trait too long for its index) is set aside with the database's
        error, so the team's other events fold; it is on no timeline until retried.
        A delete is never set aside: one that could not complete is listed here with
        `retrying` true, and stays in the backlog until it completes.
        Ordered by event id; page with `limit` and `cursor`.
      tags: [fold]
      x-key: admin
      parameters:
        - Limit
        - Cursor
      responses:
        200:
          description: A page of set-aside events.
          content:
            application/json:
              schema: FoldFailureListSchema
        400: BadRequest
    """
    key = authenticate("admin")
    limit = query_limit()
    after = query_cursor_id(_CURSOR)
    with resources().engine.connect() as connection:
        found = list_failures(connection, key.team_id, limit=limit + 1, after_id=after)
    page = found[:limit]
    next_cursor = encode_cursor(_CURSOR, LastId(page[-1].event_id)) if len(found) > limit else None
    return jsonify(_list.dump({"data": [_item(f) for f in page], "next_cursor": next_cursor}))


@bp.post("/fold/failures/retry")
def retry_fold_failures() -> Response:
    """Put the team's set-aside events back in the fold's backlog.
    ---
    post:
      operationId: retryFoldFailures
      summary: Fold the set-aside events again
      description: >
        Needs an admin key. Every set-aside event of the team becomes unfolded again and
        the team's fold is woken (or swept within seconds if Redis is down); an event
        that still fails is set aside again with the error of now. No body.
      tags: [fold]
      x-key: admin
      responses:
        200:
          description: How many events were put back.
          content:
            application/json:
              schema: FoldRetrySchema
    """
    key = authenticate("admin")
    res = resources()
    with res.engine.begin() as connection:
        retried = retry_failures(connection, key.team_id)
    if retried:
        try:
            res.fold_queue.request_fold(key.team_id)
        except RedisError as error:  # the sweep finds the events within seconds
            log.warning("retry of fold failures: cannot wake the fold of team %s: %s", key.team_id, error)
    return jsonify(_retry.dump({"retried": retried}))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
