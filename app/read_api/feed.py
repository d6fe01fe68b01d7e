"""The agents' read API: a customer's timeline, a page of it or one item whole (SPEC §4).

Both views authenticate with the `read` scope, resolve the path's customer
(`app/read_api/customer_ref.py`: an id or `user_id:` / `email:` / `anonymous_id:`; a merged one
answers 308 to the same route of its survivor, query kept) and pass through the JSON
Postgres builds for a feed item as declared in `store/answers/feed_item.py`
(`store.feed`, which chooses its own snapshot). The YAML after `---` in each docstring is
the view's OpenAPI operation (`app/openapi.py` collects it).
"""

from __future__ import annotations

import json

from flask import Blueprint, Flask, Response

from app.auth import authenticate
from app.edges import load_query, not_found, path_id
from app.read_api.customer_ref import NO_ARGS, customer_ref, redirect_same_route
from app.resources import resources
from schemas.api import FeedArgs
from schemas.cursors import encode_cursor
from store.feed import FeedFilter, read_feed_item, read_feed_page

bp = Blueprint("feed", __name__, url_prefix="/api/v1")

_feed_args = FeedArgs()


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
        return redirect_same_route(".feed", page.merged_into)
    next_cursor = encode_cursor("feed", page.next_position, args["order"]) if page.next_position else None
    # The items are JSON text built by Postgres as declared in store/answers/feed_item.py,
    # passed through as they are.
    body = f'{{"data":{page.items_json},"next_cursor":{json.dumps(next_cursor)}}}\n'
    return Response(body, mimetype="application/json")


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
    load_query(NO_ARGS)
    event_id = path_id(item_id, "feed item", "use an id from the customer's feed.")
    with resources().reads.connect(key.team_id) as connection:
        found = read_feed_item(
            connection, key.team_id, customer_ref(connection, key.team_id, customer_id), event_id
        )
    if found is None:
        raise not_found()
    merged_into, item = found
    if merged_into is not None:
        return redirect_same_route(".feed_item", merged_into)
    if item is None:
        raise not_found("feed item", "use an id from the customer's feed.")
    # Built by Postgres as declared in store/answers/feed_item.py (whole), passed through.
    return Response(item + "\n", mimetype="application/json")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
