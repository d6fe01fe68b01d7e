"""The agents' read API: find a customer, read the profile and the feed (SPEC §4).

Each view authenticates with the `read` scope, loads its query through a schema of
`schemas/api.py` (`app/edges.py`), calls `store/customers.py` or `store/feed.py`, and
answers in a response schema's shape: dumped through it (search), or built in that shape
by Postgres in one statement and passed through (profile, lookup, feed; tests hold the
two to the same output). The YAML after `---` in each docstring is the view's OpenAPI
operation (`app/openapi.py` collects it); schema names refer to `schemas.api.COMPONENTS`
or, for the answers Postgres builds, to their declarations in `store/answers/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request, url_for
from marshmallow import Schema
from sqlalchemy import Connection

from app.auth import authenticate
from app.edges import load_query, not_found, path_id
from app.resources import resources
from schemas.api import (
    MAX_EMAIL,
    CustomerListSchema,
    CustomerLookupArgs,
    CustomerSearchArgs,
    EventSummaryListSchema,
    ExternalIdListSchema,
    ExternalIdsArgs,
    FeedArgs,
    MembershipsArgs,
    MergedSchema,
    TraitsArgs,
    TraitsSchema,
)
from schemas.cursors import ListOffset, encode_cursor
from schemas.fields import utc_iso
from store.customers import (
    customer_state,
    lookup_customer,
    read_event_summary,
    read_external_ids,
    read_memberships,
    read_profile,
    read_traits,
    search_customers,
)
from store.feed import FeedFilter, read_feed_item, read_feed_page

bp = Blueprint("customers", __name__, url_prefix="/api/v1")

_LOOKUP_KINDS = {"user_id": "user", "anonymous_id": "anonymous", "email": "email"}

_search_args = CustomerSearchArgs()
_lookup_args = CustomerLookupArgs()
_feed_args = FeedArgs()
_traits_args = TraitsArgs()
_external_ids_args = ExternalIdsArgs()
_memberships_args = MembershipsArgs()
_no_args = Schema.from_dict({}, name="NoArgs")()
_customer_list = CustomerListSchema()
_merged_body = MergedSchema()
_traits = TraitsSchema()
_external_ids = ExternalIdListSchema()
_event_summary = EventSummaryListSchema()


def customer_ref(connection: Connection, team_id: int, raw: str) -> int:
    """The customer a path's `{id}` names: a customer id, or `user_id:X`, `email:X`,
    `anonymous_id:X`, resolved as `/customers/lookup` resolves it; else the 404.

    An external id resolves to the live customer holding it; a customer id may be one
    merged away (the caller answers 308).
    """
    kind, separator, value = raw.partition(":")
    if separator and kind in _LOOKUP_KINDS:
        if not value or len(value) > MAX_EMAIL or "\x00" in value:
            raise not_found()
        found = lookup_customer(connection, team_id, _LOOKUP_KINDS[kind], value)
        if found is None:
            raise not_found()
        return found
    return path_id(raw)


def _redirect_same_route(endpoint: str, survivor: int) -> Response:
    """308 to the same route of the survivor, keeping the query string."""
    location = url_for(endpoint, **{**(request.view_args or {}), "customer_id": str(survivor)})
    if request.query_string:
        location += "?" + request.query_string.decode("latin-1")
    return _merged(survivor, location)


def _live_customer(connection: Connection, team_id: int, raw: str) -> int | Response:
    """The live customer `raw` names, or the 308 to its survivor; 404 when there is none."""
    customer_id = customer_ref(connection, team_id, raw)
    exists, merged_into = customer_state(connection, team_id, customer_id)
    if not exists:
        raise not_found()
    if merged_into is not None:
        return _redirect_same_route(str(request.endpoint), merged_into)
    return customer_id


def _read_live(
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


def _live_list(
    customer_id: str, read: Callable[[Connection, int, int], Sequence[Any]], page: Schema
) -> Response:
    """One live customer's whole list (no query arguments), as the one page of `page`."""
    return _read_live(
        customer_id,
        _no_args,
        lambda connection, team_id, live, _: jsonify(
            page.dump({"data": read(connection, team_id, live), "next_cursor": None})
        ),
    )


def _offset_page(
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

    return _read_live(customer_id, args_schema, answer)


def _merged(live_id: int, location: str) -> Response:
    """308 to the survivor of a merge; clients that follow redirects never notice."""
    response = jsonify(
        _merged_body.dump(
            {"id": str(live_id), "message": f"This customer was merged into {live_id}; follow Location."}
        )
    )
    response.status_code = 308
    response.headers["Location"] = location
    return response


@bp.get("/customers")
def search() -> Response:
    """Search customers by email, name, userId or anonymousId.
    ---
    get:
      operationId: searchCustomers
      summary: Search customers, most recently seen first
      description: >
        Case-insensitive prefix search over email, name, userIds and anonymousIds. Without
        `q`, every customer of the team, most recently seen first. Customers with no events
        are not listed.
      tags: [customers]
      x-key: read
      parameters:
        - in: query
          schema: CustomerSearchArgs
      responses:
        200:
          description: One page of customers.
          content:
            application/json:
              schema: CustomerListSchema
        400: BadRequest
    """
    key = authenticate("read")
    args = load_query(_search_args)
    cursor = args.get("cursor")
    with resources().reads.connect(key.team_id) as connection:
        customers, next_position = search_customers(
            connection,
            key.team_id,
            args["q"].strip(),
            limit=args["limit"],
            after=cursor.position if cursor else None,
        )
    next_cursor = encode_cursor("customers", next_position, "desc") if next_position else None
    return jsonify(_customer_list.dump({"data": customers, "next_cursor": next_cursor}))


@bp.get("/customers/lookup")
def lookup() -> Response:
    """One customer by userId, email or anonymousId.
    ---
    get:
      operationId: lookupCustomer
      summary: Find one customer by an exact id or email
      description: >
        Give exactly one of `user_id`, `email` (case-insensitive) or `anonymous_id`. An id
        that was merged resolves to the surviving customer. When several customers share an
        email, the most recently seen answers.
      tags: [customers]
      x-key: read
      parameters:
        - in: query
          schema: CustomerLookupArgs
      responses:
        200:
          description: The customer's profile.
          content:
            application/json:
              schema: ProfileSchema
        400: BadRequest
        404: NotFound
    """
    key = authenticate("read")
    args = load_query(_lookup_args)
    (param, value), *_ = args.items()
    with resources().reads.connect(key.team_id) as connection:
        customer_id = lookup_customer(connection, key.team_id, _LOOKUP_KINDS[param], value)
        found = read_profile(connection, key.team_id, customer_id) if customer_id else None
    # lookup_customer answers live customers; one merged meanwhile is not found, as before.
    if found is None or found[0] is not None:
        raise not_found()
    return _profile_response(found[1])


@bp.get("/customers/<path:customer_id>")
def profile(customer_id: str) -> Response:
    """A customer's profile.
    ---
    get:
      operationId: getCustomer
      summary: A customer's profile
      description: >
        Ids, name, email, traits, groups, first and last event time, event count. An id
        merged into another customer answers 308 to the survivor. Bounded by what it
        shows: at most 100 userIds and 100 anonymousIds (all: /external_ids), 200 traits
        with values cut at 1,000 characters (all, whole: /traits), 100 groups with 50
        traits each (all: /groups); `truncated` names each list shown in part.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
      responses:
        200:
          description: The profile.
          content:
            application/json:
              schema: ProfileSchema
        308: Merged
        404: NotFound
    """
    key = authenticate("read")
    with resources().reads.connect(key.team_id) as connection:
        found = read_profile(connection, key.team_id, customer_ref(connection, key.team_id, customer_id))
    if found is None:
        raise not_found()
    merged_into, body = found
    if merged_into is not None:
        return _merged(merged_into, url_for(".profile", customer_id=str(merged_into)))
    return _profile_response(body)


def _profile_response(body: str) -> Response:
    # Built by Postgres as declared in store/answers/profile.py (store.customers.read_profile).
    return Response(body + "\n", mimetype="application/json")


@bp.get("/customers/<path:customer_id>/feed")
def feed(customer_id: str) -> Response:
    """A customer's timeline, newest first.
    ---
    get:
      operationId: getCustomerFeed
      summary: A customer's timeline
      description: >
        Every event of the customer, identify, group and alias included, by event time
        (newest first unless `order=asc`). Follow `next_cursor` until it is null: paging
        never repeats or skips an item, whatever arrives meanwhile. A filtered page reads
        a bounded stretch of the timeline, so it can be short, even empty, and still have
        a `next_cursor`. An id merged into another customer answers 308 to the survivor's
        feed with the same query. An item shows at most 50 keys of its properties or
        traits, values cut at 1,000 characters, and `changes` among the first 50 traits an
        identify set; its `truncated` names what it shows in part, and
        /customers/{id}/feed/{item id} answers it whole.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: query
          schema: FeedArgs
      responses:
        200:
          description: One page of the timeline.
          content:
            application/json:
              schema: FeedPageSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """
    key = authenticate("read")
    args = load_query(_feed_args)
    cursor = args.get("cursor")
    filters = FeedFilter(
        types=tuple(args.get("type", ())),
        events=tuple(args.get("event", ())),
        exclude_events=tuple(args.get("exclude_event", ())),
        since=args.get("since"),
        until=args.get("until"),
    )
    # read_feed_page chooses its own snapshot (store/snapshot.py).
    with resources().reads.connect(key.team_id) as connection:
        page = read_feed_page(
            connection,
            key.team_id,
            customer_ref(connection, key.team_id, customer_id),
            limit=args["limit"],
            after=cursor.position if cursor else None,
            newest_first=args["order"] == "desc",
            filters=filters,
        )
    if page is None:
        raise not_found()
    if page.merged_into is not None:
        return _redirect_same_route(".feed", page.merged_into)
    next_cursor = encode_cursor("feed", page.next_position, args["order"]) if page.next_position else None
    # The items are JSON text built by Postgres as declared in store/answers/feed_item.py,
    # passed through as they are.
    body = f'{{"data":{page.items_json},"next_cursor":{json.dumps(next_cursor)}}}\n'
    return Response(body, mimetype="application/json")


@bp.get("/customers/<path:customer_id>/traits")
def traits(customer_id: str) -> Response:
    """A customer's traits, optionally with when and by which message each was set.
    ---
    get:
      operationId: getCustomerTraits
      summary: A customer's traits, with provenance
      description: >
        The latest value per trait (by event time). `verbose=true` gives each as
        {value, updated_at (the event time of the identify that set it), message_id};
        `include=a,b` picks traits (spellings compare as the fold compares them). Paged by
        normalised key: up to `limit` traits (default and most 1,000) a page, values whole;
        follow `next_cursor` until null. An id merged into another customer answers 308 to
        the survivor's traits.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: query
          schema: TraitsArgs
      responses:
        200:
          description: The traits.
          content:
            application/json:
              schema: TraitsSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """

    def answer(connection: Connection, team_id: int, live: int, args: Mapping[str, Any]) -> Response:
        cursor = args.get("cursor")
        offset = cursor.position.offset if cursor else 0
        rows = read_traits(
            connection, team_id, live, args.get("include"), limit=args["limit"] + 1, offset=offset
        )
        more = len(rows) > args["limit"]
        rows = rows[: args["limit"]]
        next_cursor = encode_cursor("traits", ListOffset(offset + args["limit"]), "asc") if more else None
        if args["verbose"]:
            found = {
                row.key: {
                    "value": row.value,
                    "updated_at": utc_iso(row.updated_at),
                    "message_id": row.message_id,
                }
                for row in rows
            }
        else:
            found = {row.key: row.value for row in rows}
        return jsonify(_traits.dump({"traits": found, "next_cursor": next_cursor}))

    return _read_live(customer_id, _traits_args, answer)


@bp.get("/customers/<path:customer_id>/external_ids")
def external_ids(customer_id: str) -> Response:
    """A customer's identities, each with its first sighting.
    ---
    get:
      operationId: getCustomerExternalIds
      summary: A customer's userIds, anonymousIds and email
      description: >
        Each identity with the event time of the customer's first event that carried it
        and that event's messageId (for the email: the identify that first set the
        current email). Earliest first, `limit` a page (default 200, at most 1,000):
        follow `next_cursor` until null. Found in one pass over the customer's timeline.
        An id merged into another customer answers 308.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: query
          schema: ExternalIdsArgs
      responses:
        200:
          description: One page of the identities.
          content:
            application/json:
              schema: ExternalIdListSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """
    return _offset_page(customer_id, _external_ids_args, "external_ids", read_external_ids, _external_ids)


@bp.get("/customers/<path:customer_id>/groups")
def memberships(customer_id: str) -> Response:
    """The groups a customer is a member of, paged.
    ---
    get:
      operationId: getCustomerGroups
      summary: A customer's groups, all of them
      description: >
        Every company the customer is a member of now, by groupId, `limit` a page: the
        profile shows at most 100. Each with at most 50 traits (values cut at 1,000
        characters; `truncated` says so; /groups/{group_id} has them all). An id merged
        into another customer answers 308.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: query
          schema: MembershipsArgs
      responses:
        200:
          description: One page of memberships.
          content:
            application/json:
              schema: MembershipListSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """
    # Built by Postgres as declared in store/answers/profile.py (GROUP_MEMBERSHIP).
    return _offset_page(customer_id, _memberships_args, "groups", read_memberships, None)


@bp.get("/customers/<path:customer_id>/feed/<item_id>")
def feed_item(customer_id: str, item_id: str) -> Response:
    """One item of a customer's timeline, whole.
    ---
    get:
      operationId: getCustomerFeedItem
      summary: One feed item, whole
      description: >
        The item with this `id`, as the feed shows it but whole: every property and
        trait, values uncut, every change (its `truncated` is []). The way to what a feed
        item left out. An id merged into another customer answers 308 to the survivor's.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: path
          name: item_id
          required: true
          description: The item's `id` from the feed.
          schema: {type: string, pattern: "^[0-9]+$"}
      responses:
        200:
          description: The item.
          content:
            application/json:
              schema: FeedItemSchema
        308: Merged
        404: NotFound
    """
    key = authenticate("read")
    load_query(_no_args)
    event_id = path_id(item_id, "feed item", "use an id from the customer's feed.")
    with resources().reads.connect(key.team_id) as connection:
        found = read_feed_item(
            connection, key.team_id, customer_ref(connection, key.team_id, customer_id), event_id
        )
    if found is None:
        raise not_found()
    merged_into, item = found
    if merged_into is not None:
        return _redirect_same_route(".feed_item", merged_into)
    if item is None:
        raise not_found("feed item", "use an id from the customer's feed.")
    # Built by Postgres as declared in store/answers/feed_item.py (whole), passed through.
    return Response(item + "\n", mimetype="application/json")


@bp.get("/customers/<path:customer_id>/events/summary")
def event_summary(customer_id: str) -> Response:
    """Per event name, how often and when a customer did it.
    ---
    get:
      operationId: getCustomerEventSummary
      summary: Counts per track event name and per page or screen name
      description: >
        Over the customer's whole history: per track event name and per page or screen
        name, the count and the event times of the first and the latest. Kept by the
        fold, so it costs the same for a customer with 100,000 events. Most frequent
        first. An id merged into another customer answers 308.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
      responses:
        200:
          description: The summary (one page).
          content:
            application/json:
              schema: EventSummaryListSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """
    return _live_list(customer_id, read_event_summary, _event_summary)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
