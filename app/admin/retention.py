"""The team's retention, for its admins: how long its events are kept (docs/retention.md).

`GET /api/v1/team/retention` shows it, `PUT` sets it; both need the `admin` scope (it
erases the team's history). The rule (`store/retention.py`): the operator's
`RETENTION_DAYS` is a ceiling, a team may only shorten it.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify
from marshmallow import ValidationError

from app import edges
from app.auth import authenticate
from app.errors import ApiError
from app.resources import resources
from schemas.retention import TeamRetentionRequestSchema, TeamRetentionSchema
from store.retention import (
    RetentionRefused,
    RetentionSetting,
    read_retention,
    retention_problem,
    set_retention,
)

log = logging.getLogger(__name__)

bp = Blueprint("retention", __name__, url_prefix="/api/v1")

MAX_BODY_BYTES = 1024
_answer = TeamRetentionSchema()


def retention_json(setting: RetentionSetting) -> dict[str, int | None]:
    """The answer of both routes (and of `flask teams retention`)."""
    found: dict[str, int | None] = _answer.dump(
        {
            "retention_days": setting.team_days,
            "operator_retention_days": setting.operator_days,
            "effective_retention_days": setting.effective,
        }
    )
    return found


@bp.get("/team/retention")
def team_retention() -> Response:
    """How long the team's events are kept.
    ---
    get:
      operationId: getTeamRetention
      summary: The team's retention
      description: >
        Needs an admin key. The team's own setting, the operator's limit and the one that
        applies (the shorter; null: every event is kept).
      tags: [team]
      x-key: admin
      responses:
        200:
          description: The team's retention.
          content:
            application/json:
              schema: TeamRetentionSchema
    """
    actor = authenticate("admin")
    operator_days = resources().settings.retention_days
    with resources().engine.connect() as connection:
        setting = read_retention(connection, actor.team_id, operator_days)
    if setting is None:  # the key's team is gone (only a test deletes one)
        raise edges.not_found("team")
    return jsonify(retention_json(setting))


@bp.put("/team/retention")
def put_team_retention() -> Response:
    """Set how long the team's events are kept.
    ---
    put:
      operationId: setTeamRetention
      summary: Set the team's retention
      description: >
        Needs an admin key. `retention_days` from 1 to the operator's limit (at most 3650),
        or null for the operator's. Events dated earlier than that many days ago leave the
        timeline and are erased within about an hour, with their payloads and the trait
        changes they carried; the profile (ids, current traits, groups, first seen, counts)
        stays. Events that arrive older are answered 200 and not stored. Erased events do
        not come back if the retention is made longer.
      tags: [team]
      x-key: admin
      requestBody:
        required: true
        content:
          application/json:
            schema: TeamRetentionRequestSchema
      responses:
        200:
          description: The team's retention, as now set.
          content:
            application/json:
              schema: TeamRetentionSchema
        400: BadRequest
        413: PayloadTooLarge
    """
    actor = authenticate("admin")
    body = edges.load_body(TeamRetentionRequestSchema(), max_bytes=MAX_BODY_BYTES)
    days = body["retention_days"]
    res = resources()
    operator_days = res.settings.retention_days
    problem = retention_problem(days, operator_days)
    if problem is not None:
        raise edges.invalid(ValidationError({"retention_days": [problem]}), "body")
    try:
        with res.engine.begin() as connection:
            setting = set_retention(connection, actor.team_id, days, operator_days)
    except RetentionRefused as refused:
        raise ApiError(
            404 if refused.code == "team_not_found" else 400, refused.code, refused.message
        ) from None
    res.retention.forget(actor.team_id)  # this process applies it at once; others within seconds
    log.info(
        "team %d: retention set to %s days by key %d",
        actor.team_id,
        days,
        actor.key_id,
        extra={"team_id": actor.team_id, "key_id": actor.key_id},
    )
    return jsonify(retention_json(setting))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
