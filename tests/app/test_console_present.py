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
