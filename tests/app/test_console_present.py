"""The console's headline is the API's `summary` with presentation around it, never its own account."""

from __future__ import annotations

from typing import Any

import pytest

from app.console.present import headline


def item(kind: str, summary: str, **rest: Any) -> dict[str, Any]:
    return {"type": kind, "summary": summary, "context": {}, **rest}


@pytest.mark.parametrize(
    ("shown", "line"),
    [
        (item("identify", "Traits updated", traits={"plan": 1, "email": 2}), "Traits updated: email, plan"),
        (
            item("identify", "Traits updated", traits={"plan": 1}, user_id="u1", anonymous_id="a1"),
            "Identified as u1; traits updated: plan",
        ),
        # What the API says an identify did (leaving a company) is what the console says.
        (item("identify", "Left group Acme", traits={"company": {}}), "Left group Acme: company"),
        (item("alias", "Identified as u1", previous_id="p1"), "Identified as u1 (was p1)"),
        (
            item("page", "Viewed page Pricing", name="Pricing", context={"page_title": "Plans"}),
            "Viewed page Pricing · Plans",
        ),
        (item("track", "Signed Up"), "Signed Up"),
    ],
)
def test_the_headline_is_the_summary_plus_presentation(shown: dict[str, Any], line: str) -> None:
    assert headline(shown) == line


def test_ago_says_how_long_ago_in_the_largest_whole_unit() -> None:
    from datetime import UTC, datetime, timedelta

    from app.console.present import ago

    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert ago(now - timedelta(seconds=20), now) == "just now"
    assert ago(now + timedelta(seconds=20), now) == "just now"  # a client clock a little ahead
    assert ago(now - timedelta(minutes=1, seconds=5), now) == "1 minute ago"
    assert ago(now - timedelta(minutes=59), now) == "59 minutes ago"
    assert ago(now - timedelta(hours=3, minutes=40), now) == "3 hours ago"
    assert ago(now - timedelta(days=1, hours=2), now) == "1 day ago"
    assert ago(now - timedelta(days=15), now) == "2 weeks ago"
    assert ago(now - timedelta(days=70), now) == "2 months ago"
    assert ago(now - timedelta(days=800), now) == "2 years ago"


def test_the_presence_line_says_active_now_and_where_or_last_seen_how_long_ago() -> None:
    from datetime import UTC, datetime

    from app.console.present import presence

    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    place = {"type": "page", "name": None, "title": "Pricing | Shop", "url": "https://shop.test/pricing",
             "path": "/pricing", "since": "2024-03-01T11:50:00Z"}  # fmt: skip
    active = presence({"active_now": True, "last_seen": "2024-03-01T11:55:01Z", "place": place}, now)
    assert active["active"] and active["where"] == "Pricing | Shop"
    nowhere = presence({"active_now": True, "last_seen": "2024-03-01T11:59:00Z", "place": None}, now)
    assert nowhere["active"] and nowhere["where"] is None
    gone = presence({"active_now": False, "last_seen": "2024-03-01T11:55:00Z", "place": None}, now)
    assert not gone["active"] and gone["ago"] == "5 minutes ago" and gone["iso"] == "2024-03-01T11:55:00Z"
    assert presence({"active_now": False, "last_seen": None, "place": None}, now) == {
        "active": False,
        "seen": False,
    }
