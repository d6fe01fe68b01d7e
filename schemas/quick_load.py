"""The fast path of `prepare_event`: what the Spec's schema would load for a plainly valid
event, in a fraction of its time, or None to let the schema decide.

tests/schemas/test_quick_load.py holds the two to the same answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from schemas.event_schemas import MAX_ID, MAX_MESSAGE_ID, present
from schemas.timestamps import TimestampError, parse_timestamp
from schemas.trait_keys import (
    MAX_PROFILE_TRAIT,
    MAX_TRAIT_KEYS,
    MAX_TRAIT_NAME,
    context_traits,
    is_profile_trait,
    trait_key_count,
)

# Most events are plainly valid: string ids within their bounds, objects where objects
# go, a readable timestamp. For those, `quick_load` returns what `schema.load` would for
# the fields prepare_event reads (the declared ones). For anything else (a numeric id, a
# wrong type, a missing field, a bad timestamp, ...) it returns None and the schema
# (`schemas/event_schemas.py`), the one definition of the Spec, decides and words the
# errors.
_QUICK_IDS = {"messageId": MAX_MESSAGE_ID, "userId": MAX_ID, "anonymousId": MAX_ID}
_QUICK_OBJECTS = ("context", "integrations", "properties")


# The timestamps SDKs and Segment's archives send, RFC 3339 in UTC or with an offset
# (`2024-03-01T09:30:00.123Z`): `datetime.fromisoformat` reads exactly these as
# `parse_timestamp` does, several times faster. Anything else goes to parse_timestamp.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)", re.ASCII
)


def quick_timestamp(stamp: str) -> datetime | None:
    """`parse_timestamp(stamp)` for the common RFC 3339 form, else None (ask parse_timestamp)."""
    if _RFC3339.fullmatch(stamp) is None:
        return None
    try:
        return datetime.fromisoformat(stamp).astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, year 0 in UTC: parse_timestamp words it
        return None


def _names_fit(traits: dict[str, Any]) -> bool:
    return all(
        len(name) <= MAX_TRAIT_NAME
        and not (type(v) is str and len(v) > MAX_PROFILE_TRAIT and is_profile_trait(name))
        for name, v in traits.items()
    )


def quick_load(kind: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """What the schema would load for a plainly valid event, or None: ask the schema."""
    loaded: dict[str, Any] = {"type": kind}
    get = event.get
    for key, limit in _QUICK_IDS.items():
        if key in event:
            value = get(key)
            if value is not None and not (type(value) is str and len(value) <= limit):
                return None
            loaded[key] = value
    for key in _QUICK_OBJECTS:
        if key in event:
            value = get(key)
            if value is not None and type(value) is not dict:
                return None
            loaded[key] = value
    if "traits" in event:
        traits = get("traits")
        if traits is not None and not (type(traits) is dict and _names_fit(traits)):
            return None
        loaded["traits"] = traits
    context = loaded.get("context")
    if context is not None:
        in_context = context.get("traits")
        if type(in_context) is dict and not _names_fit(in_context):
            return None
    if trait_key_count(loaded.get("traits")) + trait_key_count(context_traits(context)) > MAX_TRAIT_KEYS:
        return None
    if "timestamp" in event:
        stamp = get("timestamp")
        if stamp is None:
            loaded["timestamp"] = None
        elif type(stamp) is not str:
            return None
        elif not stamp.strip():
            loaded["timestamp"] = None
        else:
            quick = quick_timestamp(stamp)
            if quick is None:
                try:
                    quick = parse_timestamp(stamp)
                except TimestampError:
                    return None
            loaded["timestamp"] = quick
    user_id, anonymous_id = loaded.get("userId"), loaded.get("anonymousId")
    if kind == "track":
        name = get("event")
        if type(name) is not str or not name.strip():
            return None
        loaded["event"] = name
    elif kind in ("page", "screen"):
        for key in ("name", "category"):
            if key in event:
                value = get(key)
                if value is not None and type(value) is not str:
                    return None
                loaded[key] = value
    elif kind == "group":
        group_id = get("groupId")
        if not (type(group_id) is str and 0 < len(group_id) <= MAX_ID):
            return None
        loaded["groupId"] = group_id
    elif kind == "alias":
        previous_id = get("previousId")
        if not (type(previous_id) is str and 0 < len(previous_id) <= MAX_ID):
            return None
        loaded["previousId"] = previous_id
        return loaded if present(user_id) else None
    elif kind == "delete":
        return loaded if present(user_id) else None
    elif kind != "identify":
        return None
    return loaded if present(user_id) or present(anonymous_id) else None
