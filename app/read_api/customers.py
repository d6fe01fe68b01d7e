"""The agents' read API about one customer: find a customer, read the profile, traits,
identities, groups and event summary (SPEC §4); the timeline is `app/read_api/feed.py`.

Each view authenticates with the `read` scope, loads its query through a schema of
`schemas/api.py` (`app/edges.py`), calls `store/customers.py`, and answers in a response
schema's shape: dumped through it (traits, external ids, event summary), or built in that
shape by Postgres in one statement and passed through (search, profile, lookup,
memberships; tests hold the two to the same output). A path's customer and the 308 of a
merged one are `app/read_api/customer_ref.py`'s.
The YAML after `---` in each docstring is the view's OpenAPI operation (`app/openapi.py`
collects it); schema names refer to `schemas.api.COMPONENTS` or, for the answers Postgres
builds, to their declarations in `store/answers/`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, url_for
from sqlalchemy import Connection

from app.auth import authenticate
from app.edges import load_query, not_found
from app.read_api.customer_ref import (
    LOOKUP_KINDS,
    customer_ref,
    live_list,
    merged_redirect,
    offset_page,
    read_live,
)
from app.resources import resources
from schemas.api import (
    CustomerLookupArgs,
    CustomerSearchArgs,
    EventSummaryListSchema,
    ExternalIdListSchema,
    ExternalIdsArgs,
    MembershipsArgs,
    TraitsArgs,
    TraitsSchema,
)
from schemas.cursors import ListOffset, encode_cursor
from schemas.fields import utc_iso
from store.customers import (
    lookup_customer,
    read_event_summary,
    read_external_ids,
    read_memberships,
    read_profile,
    read_traits,
    search_customers,
)

bp = Blueprint("customers", __name__, url_prefix="/api/v1")

_search_args = CustomerSearchArgs()
_lookup_args = CustomerLookupArgs()
_traits_args = TraitsArgs()
_external_ids_args = ExternalIdsArgs()
_memberships_args = MembershipsArgs()
_traits = TraitsSchema()
_external_ids = ExternalIdListSchema()
_event_summary = EventSummaryListSchema()


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
        page = search_customers(
            connection,
            key.team_id,
            args["q"].strip(),
            limit=args["limit"],
            after=cursor.position if cursor else None,
        )
    next_cursor = encode_cursor("customers", page.next_position, "desc") if page.next_position else None
    # Items built by Postgres as declared in store/answers/customer_list_item.py.
    body = f'{{"data":{page.items_json},"next_cursor":{json.dumps(next_cursor)}}}\n'
    return Response(body, mimetype="application/json")


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
        customer_id = lookup_customer(connection, key.team_id, LOOKUP_KINDS[param], value)
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
        Ids, name, email, traits, groups, first and last event time, event count, and
        presence: whether the customer is active now (an event within 5 minutes) and on
        which page or screen. An id merged into another customer answers 308 to the
        survivor. Bounded by what it shows: at most 100 userIds and 100 anonymousIds
        (all: /external_ids), 200 traits with values cut at 1,000 characters (all,
        whole: /traits), 100 groups with 50 traits each (all: /groups); `truncated`
        names each list shown in part.
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
        return merged_redirect(merged_into, url_for(".profile", customer_id=str(merged_into)))
    return _profile_response(body)


def _profile_response(body: str) -> Response:
    # Built by Postgres as declared in store/answers/profile.py (store.customers.read_profile).
    return Response(body + "\n", mimetype="application/json")


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

    return read_live(customer_id, _traits_args, answer)


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
    return offset_page(customer_id, _external_ids_args, "external_ids", read_external_ids, _external_ids)


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
    return offset_page(customer_id, _memberships_args, "groups", read_memberships, None)


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
    return live_list(customer_id, read_event_summary, _event_summary)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
