"""The web edges every read view shares: bounded cursors, ASCII limits and ids, the envelope."""

from __future__ import annotations

import base64

import pytest
from flask.testing import FlaskClient

from schemas.cursors import MAX_CURSOR_TEXT
from tests.conftest import TeamKeys

LISTS = ["/api/v1/customers", "/api/v1/customers/1/feed", "/api/v1/groups/g"]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def answer(client: FlaskClient, team: TeamKeys, url: str, status: int) -> dict[str, object]:
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, object] = response.get_json()
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize(
    "cursor",
    [b64(b"[" * 50_000 + b"]" * 50_000), "A" * (MAX_CURSOR_TEXT * 20), b64(b'["feed",[["x"]]]')],
    ids=["deeply-nested", "over-long", "nested"],
)
def test_a_hostile_cursor_is_a_400_not_a_500(
    client: FlaskClient, team: TeamKeys, url: str, cursor: str
) -> None:
    body = answer(client, team, f"{url}?cursor={cursor}", 400)
    assert body["code"] == "invalid_cursor"
    assert "cursor" in body["errors"]  # type: ignore[operator]
    assert "start again" in str(body["message"])


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize("limit", ["²", "٣", "1_0", "+5", " 5", "5.0"])
def test_a_limit_is_ascii_digits(client: FlaskClient, team: TeamKeys, url: str, limit: str) -> None:
    body = answer(client, team, f"{url}?limit={limit}", 400)
    assert body["code"] == "invalid_query"
    assert "limit" in str(body["message"]) and "limit" in body["errors"]  # type: ignore[operator]


@pytest.mark.parametrize("customer_id", ["²", "٣", "1²"])
def test_a_customer_id_is_ascii_digits(client: FlaskClient, team: TeamKeys, customer_id: str) -> None:
    for url in (f"/api/v1/customers/{customer_id}", f"/api/v1/customers/{customer_id}/feed"):
        assert answer(client, team, url, 404)["code"] == "not_found"


def test_a_query_error_names_the_argument_by_its_path(client: FlaskClient, team: TeamKeys) -> None:
    body = answer(client, team, "/api/v1/customers/1/feed?type=track&type=nope", 400)
    assert body["code"] == "invalid_query"
    assert str(body["message"]).startswith("Fix the query string: type.1: Must be one of")
    assert body["errors"] == {"type": {"1": ["Must be one of: " + str(body["message"]).split("of: ")[1]]}}
