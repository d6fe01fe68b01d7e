"""`x-key: SCOPE` in a route's YAML: the keyed answers declared once, in app/openapi.py."""

from __future__ import annotations

from typing import Any

import pytest

from app.openapi import KEY_SECURITY, expand_key


def operation(**fields: Any) -> dict[str, Any]:
    return {"responses": {200: {"description": "ok"}}, **fields}


def test_a_scoped_route_gets_the_two_ways_in_and_every_keyed_answer() -> None:
    found = operation(**{"x-key": "read"})
    expand_key(found)
    assert "x-key" not in found
    assert found["security"] == KEY_SECURITY
    assert found["responses"] == {
        200: {"description": "ok"},
        401: "Unauthorized",
        403: "Forbidden",
        429: "TooManyRequests",
        503: "Unavailable",
    }


def test_a_route_any_key_may_call_has_no_403() -> None:
    found = operation(**{"x-key": "any"})
    expand_key(found)
    assert set(found["responses"]) == {200, 401, 429, 503}


def test_what_the_route_says_itself_wins() -> None:
    own = {"description": "Only the team's own admin key."}
    found = operation(**{"x-key": "admin", "security": [{"bearerAuth": []}]})
    found["responses"][403] = own
    expand_key(found)
    assert found["security"] == [{"bearerAuth": []}]
    assert found["responses"][403] is own


def test_a_route_without_the_marker_is_left_alone() -> None:
    found = operation(security=[])
    expand_key(found)
    assert found == operation(security=[])


def test_a_scope_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(ValueError, match="reed"):
        expand_key(operation(**{"x-key": "reed"}))
