"""How the console shows what events said: one readable line per item, values as text.

Everything here comes from events, so it is untrusted. Nothing is marked safe: Jinja's
autoescape escapes every value, and a URL becomes a link only when it is http(s) with a
host (a `javascript:` or `data:` URL stays inert text).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from schemas.api import ACTIVE_WITHIN as ACTIVE_WITHIN  # the views read the rule here too
from schemas.fields import utc_iso


def is_web_url(value: Any) -> bool:
    """True for an absolute http(s) URL with a host: the only URLs rendered as links."""
    if not isinstance(value, str) or len(value) > 4000 or any(ch in value for ch in "\x00\r\n\t "):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def as_text(value: Any) -> str:
    """A trait or property value as an agent reads it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def utc_text(value: str | datetime | None) -> str:
    """An instant as UTC text (what a page shows before our script puts it in the agent's zone)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: str | datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return utc_iso(value)


# A piece of a headline, and whether it came from an event (shown direction-isolated).
Part = tuple[str, bool]


def headline_parts(item: dict[str, Any]) -> list[Part]:
    """The item's one line in pieces: the API's `summary` (built by Postgres,
    `store/answers/feed_item.py`), with what the console adds around it: the traits an
    identify carried, who an identify or alias was, a page's title. Each piece that holds
    a value from the event is marked, so the page isolates its direction (`<bdi>`): an
    RLO in a userId cannot reverse the console's words after it."""
    summary = str(item["summary"])
    kind = item["type"]
    if kind == "identify":
        traits = sorted(str(key) for key in (item.get("traits") or {}).keys())
        named: list[Part] = []
        for n, trait in enumerate(traits):
            named += [(", " if n else ": ", False), (trait, True)]
        if item.get("user_id") and item.get("anonymous_id"):
            lowered = summary[:1].lower() + summary[1:]
            return [
                ("Identified as ", False),
                (str(item["user_id"]), True),
                ("; ", False),
                (lowered, True),
                *named,
            ]
        return [(summary, True), *named]
    if kind == "alias":
        previous = item.get("previous_id")
        if previous:
            return [(summary, True), (" (was ", False), (str(previous), True), (")", False)]
        return [(summary, True)]
    if kind == "page":
        title = (item.get("context") or {}).get("page_title")
        name = item.get("name")
        if title and title != name:
            return [(summary, True), (" · ", False), (str(title), True)]
    return [(summary, True)]


def headline(item: dict[str, Any]) -> str:
    """The item's one line as text (see `headline_parts`)."""
    return "".join(text for text, _ in headline_parts(item))


def page_url(item: dict[str, Any]) -> str | None:
    """The URL a page (or any event) happened on: its `url` property, else the context's."""
    properties = item.get("properties") or {}
    url = properties.get("url") if isinstance(properties.get("url"), str) else None
    found = url or (item.get("context") or {}).get("page_url")
    return found if isinstance(found, str) else None


def pairs(mapping: Any) -> list[tuple[str, str, bool]]:
    """(key, value as text, whether the value is a link), sorted by key: a details list."""
    if not isinstance(mapping, dict):
        return []
    return [(str(key), as_text(mapping[key]), is_web_url(mapping[key])) for key in sorted(mapping)]


def timeline_item(item: dict[str, Any]) -> dict[str, Any]:
    """What the template shows of a feed item, worked out here (Python is cheaper than macros)."""
    context = item.get("context") or {}
    return {
        **item,
        "headline": headline(item),
        "headline_parts": headline_parts(item),
        "url": page_url(item),
        "page_title": context.get("page_title"),
        "ip": context.get("ip"),
        "user_agent": context.get("user_agent"),
        "when_utc": utc_text(item["timestamp"]),
        "received_utc": utc_text(item["received_at"]),
        "property_pairs": pairs(item.get("properties")),
        "trait_pairs": pairs(item.get("traits")),
    }


# "Active now" and where: the one rule is schemas.api's, applied in SQL for the profile's
# `presence` and the home's list (store/answers/presence.py); the lines here only say it.
_UNITS = (
    (365 * 86400, "year"),
    (30 * 86400, "month"),
    (7 * 86400, "week"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
)


def instant(value: str | datetime) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value


def ago(then: datetime, now: datetime) -> str:
    """`then` as an agent says it: "just now", "1 minute ago", "3 hours ago", "2 days ago"."""
    seconds = (now - then).total_seconds()
    if seconds < 60:
        return "just now"
    for size, unit in _UNITS:
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"  # unreachable: 60 s is the last unit


def place_name(place: dict[str, Any] | None) -> str | None:
    """What a place (a profile's `presence.place`, `store/answers/presence.py`) is called:
    its name, else its title, else its URL, else its path."""
    if place is None:
        return None
    for key in ("name", "title", "url", "path"):
        found = place.get(key)
        if isinstance(found, str) and found.strip():
            return found
    return None


def active_customer(customer: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A row of the home's "Active now" list, from an `ActiveCustomer` answer: who, where,
    and how long ago their newest event was (relative, the instant on hover)."""
    seen = instant(customer["presence"]["last_seen"])
    return {
        "id": customer["id"],
        "who": customer.get("name")
        or customer.get("email")
        or customer.get("user_id")
        or "Anonymous visitor",
        "email": customer.get("email") if customer.get("name") else None,
        "where": place_name(customer["presence"].get("place")),
        "ago": ago(seen, now),
        "iso": iso(seen),
        "utc": utc_text(seen),
    }


def presence(answer: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The presence line, from the profile's `presence` (`store/answers/presence.py`, the
    one rule): "Active now" and where, else when they were last seen, relative."""
    if answer.get("last_seen") is None:
        return {"active": False, "seen": False}
    seen = instant(answer["last_seen"])
    active = bool(answer.get("active_now"))
    return {
        "active": active,
        "seen": True,
        "where": place_name(answer.get("place")) if active else None,
        "ago": ago(seen, now),
        "iso": iso(seen),
        "utc": utc_text(seen),
    }


def duration(seconds: int) -> str:
    """A visit's length as an agent reads it: "under a minute", "25 min", "1 h 5 min"."""
    if seconds < 60:
        return "under a minute"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def campaign_text(campaign: Any) -> str | None:
    """A campaign as one line: its name, then source / medium when given."""
    if not isinstance(campaign, dict):
        return None
    name = campaign.get("name")
    via = " / ".join(str(campaign[key]) for key in ("source", "medium") if campaign.get(key))
    parts = [str(name)] if name else []
    if via:
        parts.append(f"({via})" if parts else via)
    return " ".join(parts) or None


def device_text(device: Any) -> str | None:
    if not isinstance(device, dict):
        return None
    return " · ".join(str(device[key]) for key in ("browser", "os", "device") if device.get(key)) or None


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        as_text=as_text,
        utc_text=utc_text,
        iso=iso,
        timeline_item=timeline_item,
        duration=duration,
        campaign_text=campaign_text,
        device_text=device_text,
    )
    app.jinja_env.tests["web_url"] = is_web_url
    # FIRST STRONG ISOLATE / POP DIRECTIONAL ISOLATE: `<bdi>` for text that holds no
    # elements (the page's <title>).
    app.jinja_env.globals.update(
        headline=headline, page_url=page_url, is_web_url=is_web_url, FSI="\u2068", PDI="\u2069"
    )
