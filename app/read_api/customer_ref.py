"""How a path names one customer, and the frame of a read of one live customer.

A route's `{id}` is a customer id or `user_id:X` / `email:X` / `anonymous_id:X`
(`customer_ref`); a customer merged away answers 308 to the same route of its survivor,
query kept (`redirect_same_route`, `merged_redirect`). The customer routes
(`app/read_api/customers.py`) and the feed's (`app/read_api/feed.py`) share these, so neither blueprint
imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Response, jsonify, request, url_for
from marshmallow import Schema
from sqlalchemy import Connection

from app.auth import authenticate
from app.edges import load_query, not_found, path_id
from app.resources import resources
from schemas.api import MAX_EMAIL, MergedSchema
from schemas.cursors import ListOffset, encode_cursor
from store.customers import customer_state, lookup_customer

LOOKUP_KINDS = {"user_id": "user", "anonymous_id": "anonymous", "email": "email"}
NO_ARGS = Schema.from_dict({}, name="NoArgs")()

_merged_body = MergedSchema()


def customer_ref(connection: Connection, team_id: int, raw: str) -> int:
    """The customer a path's `{id}` names: a customer id, or `user_id:X`, `email:X`,
    `anonymous_id:X`, resolved as `/customers/lookup` resolves it; else the 404.

    An external id resolves to the live customer holding it; a customer id may be one
    merged away (the caller answers 308).
    """
    kind, separator, value = raw.partition(":")
    if separator and kind in LOOKUP_KINDS:
        if not value or len(value) > MAX_EMAIL or "\x00" in value:
            raise not_found()
        found = lookup_customer(connection, team_id, LOOKUP_KINDS[kind], value)
        if found is None:
            raise not_found()
        return found
    return path_id(raw)


def redirect_same_route(endpoint: str, survivor: int) -> Response:
    """308 to the same route of the survivor, keeping the query string."""
    location = url_for(endpoint, **{**(request.view_args or {}), "customer_id": str(survivor)})
    if request.query_string:
        location += "?" + request.query_string.decode("latin-1")
    return merged_redirect(survivor, location)


def _live_customer(connection: Connection, team_id: int, raw: str) -> int | Response:
    """The live customer `raw` names, or the 308 to its survivor; 404 when there is none."""
    customer_id = customer_ref(connection, team_id, raw)
    exists, merged_into = customer_state(connection, team_id, customer_id)
    if not exists:
        raise not_found()
    if merged_into is not None:
        return redirect_same_route(str(request.endpoint), merged_into)
    return customer_id


def read_live(
    customer_id: str,
    args_schema: Schema,
    answer: Callable[[Connection, int, int, Mapping[str, Any]], Response],
) -> Response:
    """The frame of a read of one live customer: authenticate with `read`, load the query
    through `args_schema` (400), resolve `customer_id` (404; a merged id answers 308 to the
    same route of its survivor, query kept), then `answer(connection, team_id,
    live_customer_id, args)`."""
    key = authenticate("read")
    args = load_query(args_schema)
    with resources().reads.connect(key.team_id) as connection:
        live = _live_customer(connection, key.team_id, customer_id)
        if isinstance(live, Response):
            return live
        return answer(connection, key.team_id, live, args)


def live_list(
    customer_id: str, read: Callable[[Connection, int, int], Sequence[Any]], page: Schema
) -> Response:
    """One live customer's whole list (no query arguments), as the one page of `page`."""
    return read_live(
        customer_id,
        NO_ARGS,
        lambda connection, team_id, live, _: jsonify(
            page.dump({"data": read(connection, team_id, live), "next_cursor": None})
        ),
    )


def offset_page(
    customer_id: str,
    args_schema: Schema,
    kind: str,
    read: Callable[..., list[Any]],
    page: Schema | None,
) -> Response:
    """One page of a live customer's list paged by offset (`ListOffset`): `limit` items
    after the cursor's offset, one more read to know whether a next page follows. Dumped
    through `page`, or (None) already in its shape as Postgres built them."""

    def answer(connection: Connection, team_id: int, live: int, args: Mapping[str, Any]) -> Response:
        cursor = args.get("cursor")
        offset = cursor.position.offset if cursor else 0
        items = read(connection, team_id, live, limit=args["limit"] + 1, offset=offset)
        more = len(items) > args["limit"]
        next_cursor = encode_cursor(kind, ListOffset(offset + args["limit"]), "asc") if more else None
        body = {"data": items[: args["limit"]], "next_cursor": next_cursor}
        return jsonify(page.dump(body) if page is not None else body)

    return read_live(customer_id, args_schema, answer)


def merged_redirect(live_id: int, location: str) -> Response:
    """308 to the survivor of a merge; clients that follow redirects never notice."""
    response = jsonify(
        _merged_body.dump(
            {"id": str(live_id), "message": f"This customer was merged into {live_id}; follow Location."}
        )
    )
    response.status_code = 308
    response.headers["Location"] = location
    return response
