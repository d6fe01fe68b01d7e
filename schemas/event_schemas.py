"""The Spec as marshmallow schemas, one per event type: the one definition of what an
event must look like, and the wording of what is wrong with one.

Unknown top-level keys are INCLUDEd on purpose: Segment adds keys over time (`_metadata`,
`projectId`, `channel`, ...) and we store the event as received. `schemas/segment.py`'s
`prepare_event` asks these schemas whenever the fast path (`schemas/quick_load.py`) does
not answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validates_schema

from schemas.timestamps import TimestampError, parse_timestamp
from schemas.trait_keys import MAX_TRAIT_KEYS, check_trait_names, context_traits, trait_key_count

MAX_MESSAGE_ID = 100
MAX_ID = 255


class Identifier(fields.Field[str]):
    """A Segment id: a string, or a number that we store as its string."""

    default_error_messages = {
        "invalid": "Must be a string or a number.",
        "too_long": "Must be at most {max} characters.",
    }

    def __init__(self, max_length: int = MAX_ID, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.make_error("invalid")
            text = str(int(value)) if value.is_integer() else repr(value)
        elif isinstance(value, str):
            text = value
        else:
            raise self.make_error("invalid")
        if len(text) > self.max_length:
            raise self.make_error("too_long", max=self.max_length)
        return text


class Timestamp(fields.Field[datetime | None]):
    """A lenient Segment timestamp (see schemas.timestamps); an empty string is no timestamp."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | None:
        if isinstance(value, str) and not value.strip():
            return None
        try:
            return parse_timestamp(value)
        except TimestampError as error:
            raise ValidationError(f"Not a timestamp: {error}.") from None


class ObjectOrNull(fields.Field[Any]):
    """A JSON object or null; the value is kept as sent."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise ValidationError(f"Must be an object or null, not {json_type(value)}.")
        return value


class Traits(ObjectOrNull):
    """A traits object (or null): the fold keeps each trait by name, so names are bounded."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        value = super()._deserialize(value, attr, data, **kwargs)
        if value is not None:
            check_trait_names(value)
        return value


class OptionalString(fields.Field[Any]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"Must be a string or null, not {json_type(value)}.")
        return value


class EventSchema(Schema):
    """Fields common to every type."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True)
    messageId = Identifier(max_length=MAX_MESSAGE_ID, allow_none=True)
    userId = Identifier(allow_none=True)
    anonymousId = Identifier(allow_none=True)
    timestamp = Timestamp(allow_none=True)
    context = ObjectOrNull(allow_none=True)
    integrations = ObjectOrNull(allow_none=True)
    properties = ObjectOrNull(allow_none=True)
    traits = Traits(allow_none=True)

    @validates_schema
    def checkcontext_traits(self, data: dict[str, Any], **kwargs: Any) -> None:
        context = data.get("context")
        traits = context.get("traits") if isinstance(context, dict) else None
        if isinstance(traits, dict):
            try:
                check_trait_names(traits)
            except ValidationError as error:
                raise ValidationError(error.messages, "context.traits") from None

    @validates_schema
    def check_trait_count(self, data: dict[str, Any], **kwargs: Any) -> None:
        traits, in_context = data.get("traits"), context_traits(data.get("context"))
        count = trait_key_count(traits) + trait_key_count(in_context)
        if count > MAX_TRAIT_KEYS:
            where = "traits" if trait_key_count(traits) >= trait_key_count(in_context) else "context.traits"
            raise ValidationError(
                f"An event may carry at most {MAX_TRAIT_KEYS} trait keys (traits and context.traits "
                f"together); this one has {count}. Send the traits an agent needs, or split them "
                "over several identify calls.",
                where,
            )

    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not present(data.get("userId")) and not present(data.get("anonymousId")):
            raise ValidationError(
                "userId or anonymousId is required: send at least one, non-empty.", "userId"
            )


class TrackSchema(EventSchema):
    event = fields.String(required=True, error_messages={"invalid": "Must be a string."})

    @validates_schema
    def check_event(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not str(data.get("event") or "").strip():
            raise ValidationError("Must be a non-empty string naming the action.", "event")


class PageSchema(EventSchema):
    name = OptionalString(allow_none=True)
    category = OptionalString(allow_none=True)


class IdentifySchema(EventSchema):
    pass


class GroupSchema(EventSchema):
    groupId = Identifier(required=True, allow_none=False)

    @validates_schema
    def check_group(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not present(data.get("groupId")):
            raise ValidationError("Must be a non-empty id of the group.", "groupId")


class AliasSchema(EventSchema):
    previousId = Identifier(required=True, allow_none=False)

    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not present(data.get("userId")):
            raise ValidationError("alias needs the new userId.", "userId")
        if not present(data.get("previousId")):
            raise ValidationError("alias needs the previousId it links.", "previousId")


class DeleteSchema(EventSchema):
    @validates_schema
    def check_identity(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not present(data.get("userId")):
            raise ValidationError("delete needs the userId of the person to erase.", "userId")


SCHEMAS: dict[str, Schema] = {
    "identify": IdentifySchema(),
    "track": TrackSchema(),
    "page": PageSchema(),
    "screen": PageSchema(),
    "group": GroupSchema(),
    "alias": AliasSchema(),
    "delete": DeleteSchema(),
}


def present(value: Any) -> bool:
    return value is not None and value != ""


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
