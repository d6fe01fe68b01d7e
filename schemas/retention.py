"""The team retention setting's request and answer shapes (docs/retention.md).

The request RAISES on unknown fields (a misspelt `retention_day` must not silently
change nothing) and is strict on types: `"30"`, `30.5` or `true` is not a number of days.
Its bounds (1 day, the operator's ceiling, ten years) are checked by the one rule in
`store/retention.py`, which the CLI uses too, and answered in the same 400 envelope.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields


class TeamRetentionRequestSchema(Schema):
    """Body of `PUT /api/v1/team/retention`."""

    class Meta:
        unknown = RAISE

    retention_days = fields.Integer(
        strict=True,
        required=True,
        allow_none=True,
        metadata={
            "description": "Days of events to keep, 1 to the operator's limit (at most 3650); "
            "null: as long as the operator keeps them.",
            "example": 30,
        },
    )


class TeamRetentionSchema(Schema):
    """The team's retention: its own setting, the operator's, and the one that applies."""

    retention_days = fields.Integer(
        required=True, allow_none=True, metadata={"description": "The team's own setting (null: none)."}
    )
    operator_retention_days = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The operator's limit, RETENTION_DAYS (null: none, every event is kept)."},
    )
    effective_retention_days = fields.Integer(
        required=True,
        allow_none=True,
        metadata={
            "description": "What applies, the shorter of the two: events dated earlier than this "
            "many days ago are erased, and refused (200, not stored) when they arrive. Null: kept."
        },
    )
