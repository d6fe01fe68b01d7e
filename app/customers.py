"""The agents' read API: look a customer up, read the profile and the feed (SPEC §4)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify, redirect, request, url_for

from app.auth import authenticate
from app.errors import ApiError
from app.resources import resources
from store.customers import FeedPosition, load_feed, load_profile, lookup_customer, resolve_customer

bp = Blueprint("customers", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def _not_found(what: str = "customer") -> ApiError:
    return ApiError(404, "not_found", f"No such {what} in this team.")


def _customer_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise _not_found()
    return int(raw)


def _limit() -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid_limit",
            f"limit must be a whole number from 1 to {MAX_LIMIT}.",
            {"limit": [f"Must be between 1 and {MAX_LIMIT}."]},
        )
    return int(raw)


@bp.get("/customers/lookup")
def lookup() -> Response:
    key = authenticate("read")
    given = [
        (kind, value)
        for param, kind in (("user_id", "user"), ("anonymous_id", "anonymous"), ("email", "email"))
        if (value := request.args.get(param))
    ]
    if not given:
        raise ApiError(400, "missing_query", "Give one of user_id, anonymous_id or email.")
    kind, value = given[0]
    with resources().engine.connect() as connection:
        customer_id = lookup_customer(connection, key.team_id, kind, value)
        profile = load_profile(connection, key.team_id, customer_id) if customer_id else None
    if profile is None:
        raise _not_found()
    return jsonify(profile)


@bp.get("/customers/<raw_id>")
def profile(raw_id: str) -> Response:
    key = authenticate("read")
    with resources().engine.connect() as connection:
        found = resolve_customer(connection, key.team_id, _customer_id(raw_id))
        if found is None:
            raise _not_found()
        live_id, merged = found
        if merged:
            return redirect(url_for(".profile", raw_id=str(live_id)), code=308)
        data = load_profile(connection, key.team_id, live_id)
    if data is None:
        raise _not_found()
    return jsonify(data)


@bp.get("/customers/<raw_id>/feed")
def feed(raw_id: str) -> Response:
    key = authenticate("read")
    limit = _limit()
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(
            400, "invalid_order", "order must be asc or desc.", {"order": ["Must be asc or desc."]}
        )
    cursor = request.args.get("cursor")
    try:
        after = FeedPosition.decode(cursor) if cursor else None
    except ValueError:
        raise ApiError(
            400,
            "invalid_cursor",
            "cursor is not one this API returned; start without it.",
            {"cursor": ["Not a cursor from this API."]},
        ) from None
    with resources().engine.connect() as connection:
        found = resolve_customer(connection, key.team_id, _customer_id(raw_id))
        if found is None:
            raise _not_found()
        live_id, merged = found
        if merged:
            return redirect(url_for(".feed", raw_id=str(live_id), **request.args), code=308)
        items, next_position = load_feed(
            connection, key.team_id, live_id, limit=limit, after=after, newest_first=order == "desc"
        )
    return jsonify({"data": items, "next_cursor": next_position.encode() if next_position else None})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
