"""The fold failures API's response shapes: events the fold set aside, and why."""

from __future__ import annotations

from marshmallow import Schema, fields

from schemas.fields import Instant
from schemas.keys import Id


class FoldErrorSchema(Schema):
    """Why the fold could not fold an event, as the database said it."""

    error_class = fields.String(
        required=True, data_key="class", metadata={"description": "The driver's error class."}
    )
    sqlstate = fields.String(required=True, allow_none=True, metadata={"description": "Postgres's SQLSTATE."})
    message = fields.String(required=True, metadata={"description": "The error's first line."})


class FoldFailureSchema(Schema):
    """One event the fold set aside: it is on no timeline until retried."""

    event_id = Id(required=True)
    message_id = fields.String(required=True)
    type = fields.String(required=True)
    error = fields.Nested(FoldErrorSchema, required=True)
    failed_at = Instant(required=True, metadata={"description": "When the fold set it aside."})
    retrying = fields.Boolean(
        required=True,
        metadata={
            "description": "A delete that could not complete: never set aside, it stays in the "
            "backlog and every fold of the team tries it again until it completes."
        },
    )


class FoldFailureListSchema(Schema):
    data = fields.List(fields.Nested(FoldFailureSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class FoldRetrySchema(Schema):
    retried = fields.Integer(required=True, metadata={"description": "Events put back in the backlog."})
