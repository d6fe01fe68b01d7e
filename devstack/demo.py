"""The demo team's journeys: what `bin/serve` sends on its first run, so the console has
something to show a newcomer.

Three people, as a shop's Segment source would report them, sent through our own ingest
path (`POST /v1/batch` with the demo team's ingest-only key, as Segment sends them):

- Maya Chen arrives anonymously from the spring-sale newsletter (a campaign, an email
  referrer, a desktop browser), browses, signs up and is identified, joins her company,
  orders twice, comes back on her phone (a second device, tied to her by a login), and
  writes to support about an order a minute before the first run is ready (so the
  console shows her "Active now" for a few minutes, then "last seen ... ago").
- Sam Okafor finds the shop from a Google search, signs up for a trial, browses the docs.
- An anonymous visitor from a Facebook ad looks at two pages on an Android phone and leaves.

Times are relative to the first run. Every event has a fixed messageId, so sending them
again stores nothing twice (ingest deduplicates on it); `bin/serve` sends them once per
demo team and notes it in `.local/demo-seeded`.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SHOP = "https://shop.example"
DESKTOP = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
LIBRARY = {"name": "analytics.js", "version": "next-1.64.0"}


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Journey:
    """One person's events, in order, each with the context of the device it came from."""

    def __init__(self, prefix: str, now: datetime):
        self.prefix = prefix
        self.now = now
        self.events: list[dict[str, Any]] = []

    def add(
        self,
        kind: str,
        ago: timedelta,
        who: dict[str, str],
        device: dict[str, Any],
        **fields: Any,
    ) -> None:
        context = {
            "library": LIBRARY,
            "userAgent": device["ua"],
            "ip": device["ip"],
            **fields.pop("context", {}),
        }
        path = fields.pop("path", None)
        if path is not None:
            page = {"path": path.split("?")[0], "url": SHOP + path, "title": fields.pop("title", "Shop")}
            if "referrer" in fields:
                page["referrer"] = fields.pop("referrer")
            context["page"] = page
        self.events.append(
            {
                "type": kind,
                "messageId": f"demo-{self.prefix}-{len(self.events) + 1:02}",
                "timestamp": _iso(self.now - ago),
                **who,
                "context": context,
                **fields,
            }
        )


def journeys(now: datetime) -> list[dict[str, Any]]:
    """The demo events, oldest first within each person, as Segment would send them."""
    day, hour, minute = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
    laptop = {"ua": DESKTOP, "ip": "198.51.100.23"}
    phone = {"ua": IPHONE, "ip": "203.0.113.77"}

    maya = _Journey("maya", now)
    anon = {"anonymousId": "anon-7f3a9c21"}
    known = {"userId": "u-maya-chen", "anonymousId": "anon-7f3a9c21"}
    spring = {"name": "spring_sale", "source": "newsletter", "medium": "email", "content": "hero_button"}
    start = 6 * day + 3 * hour
    maya.add(
        "page",
        start,
        anon,
        laptop,
        name="Home",
        title="Spring sale | Shop",
        path="/?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_content=hero_button",
        referrer="https://mail.google.com/",
        context={"campaign": spring},
    )
    maya.add(
        "page",
        start - 2 * minute,
        anon,
        laptop,
        name="Trail Runner 3",
        title="Trail Runner 3 | Shop",
        path="/products/trail-runner-3",
        context={"campaign": spring},
    )
    maya.add(
        "track",
        start - 3 * minute,
        anon,
        laptop,
        event="Product Viewed",
        path="/products/trail-runner-3",
        properties={"product_id": "TR3-42", "name": "Trail Runner 3", "price": 129.0, "currency": "USD"},
    )
    maya.add(
        "page",
        start - 6 * minute,
        anon,
        laptop,
        name="Sign up",
        title="Create your account | Shop",
        path="/signup",
    )
    maya.add(
        "track",
        start - 8 * minute,
        anon,
        laptop,
        event="Signed Up",
        path="/signup",
        properties={"method": "email"},
    )
    maya.add(
        "identify",
        start - 8 * minute,
        known,
        laptop,
        traits={
            "email": "maya.chen@example.com",
            "name": "Maya Chen",
            "plan": "member",
            "createdAt": _iso(now - start + 8 * minute),
        },
    )
    maya.add(
        "group",
        start - 9 * minute,
        known,
        laptop,
        groupId="northwind",
        traits={"name": "Northwind Traders", "industry": "Retail", "employees": 240},
    )
    maya.add(
        "track",
        start - 14 * minute,
        known,
        laptop,
        event="Order Completed",
        path="/checkout/complete",
        properties={
            "order_id": "1041",
            "revenue": 129.0,
            "currency": "USD",
            "products": [{"product_id": "TR3-42", "name": "Trail Runner 3", "quantity": 1}],
        },
    )
    # Back on her phone two days later: a new anonymousId, tied to her when she logs in.
    phone_anon = {"anonymousId": "anon-c41e0b88"}
    phone_known = {"userId": "u-maya-chen", "anonymousId": "anon-c41e0b88"}
    back = 2 * day + 5 * hour
    maya.add(
        "page",
        back,
        phone_anon,
        phone,
        name="Home",
        title="Shop",
        path="/",
        referrer="https://www.instagram.com/",
    )
    maya.add(
        "page", back - 1 * minute, phone_anon, phone, name="Log in", title="Log in | Shop", path="/login"
    )
    maya.add("identify", back - 2 * minute, phone_known, phone, traits={"email": "maya.chen@example.com"})
    maya.add(
        "track",
        back - 6 * minute,
        phone_known,
        phone,
        event="Order Completed",
        path="/checkout/complete",
        properties={
            "order_id": "1043",
            "revenue": 58.5,
            "currency": "USD",
            "products": [{"product_id": "SK-9", "name": "Running socks (3 pack)", "quantity": 3}],
        },
    )
    # Today: where is order 1043? Then she writes to support.
    today = 13 * minute  # her help request is a minute old: the console shows her "Active now"
    maya.add(
        "page", today, known, laptop, name="Your orders", title="Your orders | Shop", path="/account/orders"
    )
    maya.add(
        "page",
        today - 3 * minute,
        known,
        laptop,
        name="Order 1043",
        title="Order #1043 | Shop",
        path="/account/orders/1043",
    )
    maya.add(
        "page",
        today - 6 * minute,
        known,
        laptop,
        name="Shipping help",
        title="Shipping & delivery | Help",
        path="/help/shipping",
    )
    maya.add(
        "track",
        today - 12 * minute,
        known,
        laptop,
        event="Help Requested",
        path="/help/contact",
        properties={"subject": "Where is my order #1043?", "channel": "contact form", "order_id": "1043"},
    )

    sam = _Journey("sam", now)
    s_anon = {"anonymousId": "anon-2b8d1e5f"}
    s_known = {"userId": "u-sam-okafor", "anonymousId": "anon-2b8d1e5f"}
    desk = {"ua": WINDOWS, "ip": "192.0.2.140"}
    first = 3 * day + 1 * hour
    sam.add(
        "page", first, s_anon, desk, name="Home", title="Shop", path="/", referrer="https://www.google.com/"
    )
    sam.add("page", first - 4 * minute, s_anon, desk, name="Pricing", title="Pricing | Shop", path="/pricing")
    sam.add(
        "track",
        first - 7 * minute,
        s_anon,
        desk,
        event="Trial Started",
        path="/signup",
        properties={"plan": "business", "trial_days": 14},
    )
    sam.add(
        "identify",
        first - 7 * minute,
        s_known,
        desk,
        traits={
            "email": "sam.okafor@example.org",
            "name": "Sam Okafor",
            "plan": "business-trial",
            "company": {"name": "Okafor Studio"},
        },
    )
    sam.add("page", 20 * hour, s_known, desk, name="API docs", title="Developers | Shop", path="/docs/api")

    ad = _Journey("ad", now)
    visitor = {"anonymousId": "anon-9e61f0d4"}
    pixel = {"ua": ANDROID, "ip": "203.0.113.201"}
    summer = {"name": "summer_trail", "source": "facebook", "medium": "cpc", "term": "trail shoes"}
    ad.add(
        "page",
        7 * hour,
        visitor,
        pixel,
        name="Trail shoes",
        title="Trail shoes | Shop",
        path="/collections/trail?utm_source=facebook&utm_medium=cpc&utm_campaign=summer_trail",
        referrer="https://m.facebook.com/",
        context={"campaign": summer},
    )
    ad.add(
        "page",
        7 * hour - 2 * minute,
        visitor,
        pixel,
        name="Trail Runner 3",
        title="Trail Runner 3 | Shop",
        path="/products/trail-runner-3",
        context={"campaign": summer},
    )

    return maya.events + sam.events + ad.events


def send(base: str, ingest_key: str, events: list[dict[str, Any]]) -> None:
    """POST the events to `/v1/batch` as Segment does (Basic auth, the key as the user)."""
    token = base64.b64encode(f"{ingest_key}:".encode()).decode()
    body = json.dumps({"batch": events, "sentAt": _iso(datetime.now(UTC))}).encode()
    request = urllib.request.Request(
        base + "/v1/batch",
        data=body,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200:
            raise RuntimeError(f"/v1/batch answered {response.status}")


def seed_once(base: str, team_id: int, ingest_key: str, local: Path) -> bool:
    """Send the demo journeys unless this demo team already has them; whether it sent them."""
    marker = local / "demo-seeded"
    if marker.exists() and marker.read_text().strip() == str(team_id):
        return False
    send(base, ingest_key, journeys(datetime.now(UTC)))
    local.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{team_id}\n")
    return True
