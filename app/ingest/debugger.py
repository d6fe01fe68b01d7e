"""The team's ingestion debugger: what was refused, and how ingest went (docs/ingest-debugger.md).

`GET /api/v1/ingest/rejections` lists the kept refusals of HTTP ingest and imports,
newest first; `GET /api/v1/ingest/summary` counts accepted, duplicate and refused
events per type and code over the last 24 hours and 7 days. Both need the `read`
scope: they show event data of the team (previews, with every key taken out), as the
read API does, and whoever debugs a Segment connection should not need a key that can
also create and revoke keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, jsonify

from app import edges
from app.auth import authenticate
from app.resources import resources
from schemas.rejections import (
    IngestSummaryArgs,
    IngestSummarySchema,
    RejectionListArgs,
    RejectionListSchema,
    encode_rejection_cursor,
)
from store.rejections import RejectionFilter, list_rejections, summarize_ingest

bp = Blueprint("rejections", __name__, url_prefix="/api/v1/ingest")

_list_args = RejectionListArgs()
_summary_args = IngestSummaryArgs()
_list = RejectionListSchema()
_summary = IngestSummarySchema()


@bp.get("/rejections")
def rejections() -> Response:
    """The team's refused events, newest first.
    ---
    get:
      operationId: listIngestRejections
      summary: Refused events of HTTP ingest and imports, newest first
      description: >
        Every event (or whole request) that ingest or an import refused, with when, where
        (route, or file and line), the status and code it got, the message that says what
        to fix, its messageId and a preview of what was sent (at most 2,000 characters,
        every key removed). The latest 1,000 per team are kept; the summary counts them all.
      tags: [ingest debugger]
      x-key: read
      parameters:
        - in: query
          schema: RejectionListArgs
      responses:
        200:
          description: One page of refusals.
          content:
            application/json:
              schema: RejectionListSchema
        400: BadRequest
    """
    key = authenticate("read")
    args = edges.load_query(_list_args)
    where = RejectionFilter(
        code=args.get("code"), source=args.get("source"), since=args.get("since"), until=args.get("until")
    )
    with resources().reads.connect(key.team_id) as connection:
        page, next_id = list_rejections(connection, key.team_id, where, args["limit"], args.get("cursor"))
    next_cursor = encode_rejection_cursor(next_id) if next_id is not None else None
    return jsonify(_list.dump({"data": page, "next_cursor": next_cursor}))


@bp.get("/summary")
def summary() -> Response:
    """Accepted, duplicate and refused counts, last 24 hours and 7 days.
    ---
    get:
      operationId: getIngestSummary
      summary: How ingest went for the team, per type and code
      description: >
        Counts of events accepted (new), duplicates (already stored) and refused, per event
        type and per error code, over the last 24 hours and 7 days in whole UTC hours, for
        HTTP ingest and imports together. Counts of HTTP ingest reach it within about a
        second. A batch of several types with both new and duplicate events is counted
        under type `mixed`; a refused whole request under type `request`.
      tags: [ingest debugger]
      x-key: read
      parameters:
        - in: query
          schema: IngestSummaryArgs
      responses:
        200:
          description: The counts.
          content:
            application/json:
              schema: IngestSummarySchema
        400: BadRequest
    """
    key = authenticate("read")
    edges.load_query(_summary_args)
    with resources().reads.connect(key.team_id) as connection:
        found = summarize_ingest(connection, key.team_id, datetime.now(UTC))
    return jsonify(_summary.dump(found))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
