"""The agents' read API: a customer's timeline, a page of it or one item whole (SPEC §4).

Both views authenticate with the `read` scope, resolve the path's customer
(`app/read_api/customer_ref.py`: an id or `user_id:` / `email:` / `anonymous_id:`; a merged one
answers 308 to the same route of its survivor, query kept) and pass through the JSON
Postgres builds for a feed item as declared in `store/answers/feed_item.py`
(`store.feed`, which chooses its own snapshot). The YAML after `---` in each docstring is
the view's OpenAPI operation (`app/openapi.py` collects it).

The feed page is the agents' hottest read: `FeedLane` answers `GET
/customers/{customer id}/feed` in front of Flask's dispatch, as the ingest lane answers
its POSTs (app/ingest/lane.py), with the same key, scope, rate limit, expensive-read gate,
client watch, statement and envelope, and no request context. Anything else (an
`email:` / `user_id:` reference, HEAD, the item route) goes to the Flask views below,
which run the same steps and document the routes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from marshmallow import ValidationError
from sqlalchemy import Connection
from werkzeug.wrappers import Request

from app.auth import authenticate, check_key, credentials_in
from app.edges import invalid, load_query, not_found, path_id
from app.errors import READS_MARK
from app.ingest.ratelimit import RateLimits
from app.read_api.customer_ref import NO_ARGS, customer_ref, redirect_same_route
from app.resources import Reads, Resources, resources
from app.serving import metrics
from schemas.api import FeedArgs, query_arguments
from schemas.cursors import encode_cursor
from service.waiting import unwatch_client
from store.feed import FeedFilter, FeedPage, read_feed_item, read_feed_page

bp = Blueprint("feed", __name__, url_prefix="/api/v1")

FEED_RULE = "/api/v1/customers/<path:customer_id>/feed"
_feed_args = FeedArgs()
# What FeedArgs loads from an empty query string (the first page), loaded once.
_FIRST_PAGE_ARGS: Mapping[str, Any] = MappingProxyType(_feed_args.load({}))
# The arguments `feed_args` reads field by field when nothing else is given.
_PAGING = frozenset(("cursor", "limit"))


def feed_args(args: Any) -> Mapping[str, Any]:
    """The feed's query (a werkzeug MultiDict) through FeedArgs, or the 400 of `load_query`.

    The common queries skip the schema's machinery but not its rules: none at all is
    FeedArgs's own defaults, loaded once; `cursor` and/or `limit` alone, each once, are
    read by FeedArgs's own fields and its order check. Anything else, and any value
    those fields refuse, is loaded by the whole schema (which raises the same 400).
    """
    if not args:
        return _FIRST_PAGE_ARGS
    if args.keys() <= _PAGING and all(len(args.getlist(name)) == 1 for name in args):
        try:
            loaded = {name: _feed_args.fields[name].deserialize(args[name]) for name in args}
        except ValidationError:
            pass
        else:
            cursor = loaded.get("cursor")
            if cursor is None or cursor.order == _FIRST_PAGE_ARGS["order"]:
                return {**_FIRST_PAGE_ARGS, **loaded}
    try:
        found: dict[str, Any] = _feed_args.load(query_arguments(_feed_args, args))
    except ValidationError as error:
        raise invalid(error, "query") from None
    return found


def _read_page(
    connection: Connection, team_id: int, customer_id: int, args: Mapping[str, Any]
) -> FeedPage | None:
    cursor = args.get("cursor")
    filters = FeedFilter(
        types=tuple(args.get("type", ())),
        events=tuple(args.get("event", ())),
        exclude_events=tuple(args.get("exclude_event", ())),
        since=args.get("since"),
        until=args.get("until"),
    )
    # read_feed_page chooses its own snapshot (store/snapshot.py).
    return read_feed_page(
        connection,
        team_id,
        customer_id,
        limit=args["limit"],
        after=cursor.position if cursor else None,
        newest_first=args["order"] == "desc",
        filters=filters,
    )


def _page_body(page: FeedPage, args: Mapping[str, Any]) -> bytes:
    """The page's JSON: the items' text built by Postgres as declared in
    store/answers/feed_item.py, passed through as they are, and the next cursor."""
    next_cursor = encode_cursor("feed", page.next_position, args["order"]) if page.next_position else None
    return f'{{"data":{page.items_json},"next_cursor":{json.dumps(next_cursor)}}}\n'.encode()


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
    args = feed_args(request.args)
    with resources().reads.connect(key.team_id) as connection:
        page = _read_page(connection, key.team_id, customer_ref(connection, key.team_id, customer_id), args)
    if page is None:
        raise not_found()
    if page.merged_into is not None:
        return redirect_same_route(".feed", page.merged_into)
    return Response(_page_body(page, args), mimetype="application/json")


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


# -- the lane: GET /api/v1/customers/{customer id}/feed in front of Flask ---------------

_PREFIX = "/api/v1/customers/"
_SUFFIX = "/feed"
# A customer id as `path_id` takes it; any other `{id}` (a reference, junk) goes to Flask.
_CUSTOMER_ID = re.compile(r"[0-9]{1,18}")
_JSON_HEADERS = (("Content-Type", "application/json"),)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class _Read:
    """What one lane request holds, to give back when it ends."""

    reads: Reads | None = None  # the read budget whose gate holds a place of `team_id`
    team_id: int | None = None
    reading: bool = False  # it read through the read budget (app/errors.py READS_MARK)


class FeedLane:
    """WSGI middleware: `GET /api/v1/customers/{customer id}/feed` answered in front of
    Flask's dispatch, without a request context, routing, hooks or Response objects.

    The same steps as the `feed` view: the key from `Authorization` checked for `read`
    (app/auth.py) with the app's key cache, one request of the key's rate limit, a place
    in the team's expensive-read gate and a read connection whose statement is cancelled
    if the client goes (app/resources.py `Reads`), the one statement of `store.feed`, the
    page's JSON passed through. A merged customer's 308 and every error are rendered by
    the app in a request context pushed then (the one envelope, `app/errors.py`); the
    request latency metric is observed here under the view's rule.
    """

    def __init__(self, app: Flask, inner: WSGIApp):
        self.app = app
        self.inner = inner

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if (
            not (path.endswith(_SUFFIX) and path.startswith(_PREFIX))
            or environ.get("REQUEST_METHOD") != "GET"
        ):
            return self.inner(environ, start_response)
        raw_id = path[len(_PREFIX) : -len(_SUFFIX)]
        if not _CUSTOMER_ID.fullmatch(raw_id):
            return self.inner(environ, start_response)
        started = time.perf_counter()
        read = _Read()
        try:
            try:
                page, args = self._page(environ, int(raw_id), read)
            except Exception as error:
                response = self._rendered(environ, error, read)
            else:
                if page is not None and page.merged_into is None:
                    body = _page_body(page, args)
                    start_response("200 OK", [*_JSON_HEADERS, ("Content-Length", str(len(body)))])
                    metrics.request_observed(FEED_RULE, 200, time.perf_counter() - started)
                    return [body]
                survivor = page.merged_into if page is not None else None
                response = self._rendered(environ, not_found() if survivor is None else survivor, read)
            metrics.request_observed(FEED_RULE, response.status_code, time.perf_counter() - started)
            return response(environ, start_response)
        finally:
            if read.reads is not None and read.team_id is not None:
                read.reads.gate.leave(read.team_id)
            if read.reading:
                unwatch_client()

    @property
    def resources(self) -> Resources:
        """The app's own (read on each request, so a test that swaps them is obeyed)."""
        found: Resources = self.app.extensions["timeline"]
        return found

    @property
    def limits(self) -> RateLimits:
        found: RateLimits = self.app.extensions["rate_limits"]
        return found

    def _page(
        self, environ: dict[str, Any], customer_id: int, read: _Read
    ) -> tuple[FeedPage | None, Mapping[str, Any]]:
        secret = credentials_in(environ.get("HTTP_AUTHORIZATION", ""))
        key = check_key(self.resources.keys, secret, "read")
        self.limits.take_request(key.key_id)
        query = environ.get("QUERY_STRING", "")
        args = feed_args(Request(environ).args) if query else _FIRST_PAGE_ARGS
        reads = self.resources.reads
        reads.enter_gate(key.team_id)
        read.reads, read.team_id = reads, key.team_id
        read.reading = True
        with reads.watched(environ) as connection:
            return _read_page(connection, key.team_id, customer_id, args), args

    def _rendered(self, environ: dict[str, Any], answer: Exception | int, read: _Read) -> Response:
        """The app's answer, as the `feed` view's would be: the 308 to a merged customer's
        survivor (`answer` its id), or an error through the app's handlers."""
        with self.app.request_context(environ):
            if read.reading:
                setattr(g, READS_MARK, True)
            if isinstance(answer, int):
                return redirect_same_route("feed.feed", answer)
            try:
                return self.app.make_response(self.app.handle_user_exception(answer))
            except Exception as unhandled:
                return self.app.make_response(self.app.handle_exception(unhandled))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.wsgi_app = FeedLane(app, app.wsgi_app)  # type: ignore[method-assign]
