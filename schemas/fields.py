"""marshmallow fields every API shape shares: text, instants, page limits.

One definition each, so the read API (`schemas/api.py`) and key management
(`schemas/keys.py`) read and write them alike. No Flask, no database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate

from schemas.timestamps import TimestampError, parse_timestamp

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def utc_iso(value: datetime) -> str:
    """ISO-8601 in UTC with Z (`2024-03-01T12:00:00.250000Z`): how the API writes every instant."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class QueryText(fields.String):
    """A string argument; NUL is refused here because Postgres text cannot hold it."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text: str = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        return text


# `+` in a query string means a space; a caller who forgot to escape the `+` of an offset
# (`since=2024-03-01T12:00:00+02:00`) sends `... 02:00`, which we read as they meant.
_UNESCAPED_OFFSET = re.compile(r"(\d) (\d{2}(?::?\d{2})?)$")
_LOWER_T = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})t")


class Instant(fields.DateTime):
    """An instant: read leniently as Segment timestamps are, written by `utc_iso`."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else utc_iso(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("Must be an ISO-8601 timestamp.")
        text = _LOWER_T.sub(r"\1T", _UNESCAPED_OFFSET.sub(r"\1+\2", value.strip()))
        try:
            return parse_timestamp(text)
        except TimestampError as error:
            raise ValidationError(f"Must be an ISO-8601 timestamp ({error}).") from None


# ASCII digits only: Python's int() also reads "٣" and "1_0", which no caller means.
ASCII_INTEGER = re.compile(r"-?[0-9]{1,30}")


class WholeNumber(fields.Integer):
    """An integer argument written in ASCII digits (a query string is text)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not ASCII_INTEGER.fullmatch(value):
            raise ValidationError(self.error_messages["invalid"])
        found: int = super()._deserialize(value, attr, data, **kwargs)
        return found


def limit_field(default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> WholeNumber:
    """`limit`: items per page, 1 to `most`."""
    return WholeNumber(
        load_default=default,
        validate=validate.Range(1, most),
        metadata={"description": f"Items per page, 1 to {most}."},
    )
