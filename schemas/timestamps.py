"""Lenient timestamp parsing for the timestamps Segment and its SDKs really send.

ISO-8601 with `Z` or an offset, with or without a fraction, unpadded fields, a space
instead of `T`, and Go's `time.Time.String()` form that Segment puts in the
`originalTimestamp` of GDPR delete events:
`2020-05-09 23:54:49.209808489 +0000 UTC m=+70366.298768264`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# Each optional part starts with one fixed separator, so no two parts compete for the
# same characters: matching stays linear (a `\s*` between each part backtracked
# cubically on a long run of spaces). Matched with fullmatch on the stripped value.
_ISO = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})
    (?:[Tt\ ](?P<hour>\d{1,2}):(?P<minute>\d{1,2})
        (?::(?P<second>\d{1,2})(?:[.,](?P<fraction>\d+))?)?
    )?
    (?:\ ?(?P<zone>[Zz]|[+-]\d{1,2}(?::?\d{2})?))?
    (?:\ (?:UTC|GMT))?
    (?:\ m=[+-]?[\d.]+)?   # Go's monotonic clock reading
    """,
    re.VERBOSE | re.ASCII,  # \d must not match other scripts' digits
)
# Go's form is the longest we read (about 60 characters); longer text is not a timestamp.
_MAX_LENGTH = 100

# Epoch numbers above this are milliseconds (1e11 seconds is the year 5138).
_MILLIS_THRESHOLD = 100_000_000_000


class TimestampError(ValueError):
    """The value is not a timestamp we can read."""


def parse_timestamp(value: object) -> datetime:
    """Parse a Segment timestamp into an aware UTC datetime, or raise TimestampError."""
    if isinstance(value, bool):
        raise TimestampError("expected an ISO-8601 string, got a boolean")
    if isinstance(value, int | float):
        try:
            seconds = value / 1000 if abs(value) >= _MILLIS_THRESHOLD else value
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise TimestampError("epoch number is out of range") from None
    if not isinstance(value, str):
        raise TimestampError(f"expected an ISO-8601 string, got {_json_type(value)}")
    if len(value) > _MAX_LENGTH:
        raise TimestampError(f"{value[:40]!r}... is too long to be a timestamp")
    match = _ISO.fullmatch(value.strip())
    if match is None:
        raise TimestampError(f"{value[:40]!r} is not an ISO-8601 timestamp")
    parts = match.groupdict()
    fraction = (parts["fraction"] or "0")[:6].ljust(6, "0")
    zone = parts["zone"]
    tz: timezone = UTC
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hours, minutes = (int(digits[:-2]), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
        if hours > 23 or minutes > 59:
            raise TimestampError(f"{value[:40]!r} has an impossible UTC offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        parsed = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=tz,
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise TimestampError(f"{value[:40]!r} is not a real date and time") from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
