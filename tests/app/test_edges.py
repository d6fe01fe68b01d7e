"""The web edges every read view shares: bounded cursors, ASCII limits and ids, the envelope."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, fields, validate

from app import edges
from app.errors import ApiError
from schemas.cursors import MAX_CURSOR_TEXT, LastId, encode_cursor
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


# --- what app/admin/keys.py and any new view adopt (key management reads bodies and id cursors) ---


class _Named(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 5))
    tags = fields.List(fields.String(validate=validate.OneOf(["a", "b"])))


def _loaded(app: Flask, data: bytes, **kwargs: Any) -> dict[str, Any]:
    with app.test_request_context("/", method="POST", data=data):
        return edges.load_body(_Named(), max_bytes=64, **kwargs)


def _refused(app: Flask, data: bytes, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as refused:
        _loaded(app, data, **kwargs)
    return refused.value


def test_a_body_loads_through_its_schema(app: Flask) -> None:
    assert _loaded(app, b'{"name": "ab"}') == {"name": "ab"}
    assert _loaded(app, b"  ", empty_means={"name": "x"}) == {"name": "x"}


def test_each_bad_body_is_a_4xx_that_says_what_to_fix(app: Flask) -> None:
    big = _refused(app, b'{"name": "' + b"x" * 100 + b'"}')
    assert (big.status, big.code) == (413, "request_too_large")
    assert (_refused(app, b"{").status, _refused(app, b"{").code) == (400, "invalid_json")
    assert _refused(app, b"[" * 60 + b"]" * 3).code == "invalid_json"  # within 64 bytes, not JSON
    assert _refused(app, b"[1]").code == "invalid_body"
    wrong = _refused(app, b'{"name": "toolong", "tags": ["a", "z"]}')
    assert (wrong.status, wrong.code) == (400, "invalid_body")
    assert wrong.message.startswith("Fix the body: ")
    assert (
        "name: Length must be between 1 and 5." in wrong.message and "tags.1: Must be one of" in wrong.message
    )
    assert wrong.errors == {
        "name": ["Length must be between 1 and 5."],
        "tags": {"1": ["Must be one of: a, b."]},
    }


@pytest.mark.parametrize("limit", ["²", "٣", "0", "201", "-1", "1_0", "9" * 40])
def test_query_limit_is_ascii_digits_in_range(app: Flask, limit: str) -> None:
    with app.test_request_context(f"/?limit={limit}"), pytest.raises(ApiError) as refused:
        edges.query_limit()
    assert (refused.value.status, refused.value.code) == (400, "invalid_limit")


def test_query_limit_reads_its_default_and_its_value(app: Flask) -> None:
    with app.test_request_context("/"):
        assert edges.query_limit() == 50
    with app.test_request_context("/?limit=200"):
        assert edges.query_limit() == 200


def test_an_id_cursor_reads_back_and_refuses_anything_else(app: Flask) -> None:
    with app.test_request_context(f"/?cursor={encode_cursor('keys', LastId(41))}"):
        assert edges.query_cursor_id("keys") == 41
    with app.test_request_context("/"):
        assert edges.query_cursor_id("keys") is None
    for bad in (
        encode_cursor("audit", LastId(41)),
        b64(b'["keys","41"]'),
        b64(b'["keys",1,2]'),
        "x" * 600,
    ):
        with app.test_request_context(f"/?cursor={bad}"), pytest.raises(ApiError) as refused:
            edges.query_cursor_id("keys")
        assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


def test_a_path_id_is_ascii_digits(app: Flask) -> None:
    assert edges.path_id("0041") == 41
    for bad in ("²", "٣", "-1", "1" * 19, ""):
        with pytest.raises(ApiError) as refused:
            edges.path_id(bad, "key", "use an id from GET /api/v1/keys.")
        assert refused.value.status == 404
        assert refused.value.message == "No such key in this team; use an id from GET /api/v1/keys."
