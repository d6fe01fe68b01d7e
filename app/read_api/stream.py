"""`GET /api/v1/customers/{id}/stream`: a customer's new feed items as Server-Sent Events.

A ticketing tool's sidebar (or the console's customer page) opens it and gets each event
folded onto the customer's timeline from then on, as the feed shows it, within a moment
of the fold (`store/live.py`, `app/read_api/live.py`). Each item's SSE `id` is its stream
position; a client that reconnects with `Last-Event-ID` (EventSource does it by itself)
gets what it missed, in order, nothing twice. A comment line every heartbeat
(`Settings.live_heartbeat_seconds`, 15 s) keeps proxies from closing a quiet stream, and
is when the key is checked again: a key revoked (or rotated away) ends the stream with
an `end` event saying why.

A stream is a connection held open: a process serves at most
`Settings.live_streams_per_process` of them (503 with Retry-After past it), a small share
of its connection slots (docs/serving.md), so open pages never take what ingest needs.
It holds no Postgres connection while it waits.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import Connection, Engine

from app.auth import check_key, key_from_header
from app.errors import ApiError
from app.read_api.customer_ref import NO_ARGS, read_live
from app.read_api.live import END, RESYNC, Listener, Subscription, per_process_listener
from app.resources import Resources, resources
from service.per_process import PerProcess
from service.settings import Settings
from store.live import CATCH_UP_ITEMS, StreamItem, StreamPosition, newest_position, read_since

bp = Blueprint("stream", __name__, url_prefix="/api/v1")

HEARTBEAT_SECONDS = Settings.live_heartbeat_seconds  # the default; a process's own is in its Settings
RETRY_MILLISECONDS = 2_000
_BUSY_RETRY_SECONDS = 5


@bp.get("/customers/<path:customer_id>/stream")
def stream(customer_id: str) -> Response:
    """New items of a customer's timeline, live (Server-Sent Events).
    ---
    get:
      operationId: streamCustomerFeed
      summary: A customer's timeline, live
      description: >
        A `text/event-stream` of the customer's new feed items: each event folded onto the
        timeline after the stream opened is one `item` event whose data is the feed item
        (as in the feed) and whose `id` is its position. Reconnect with `Last-Event-ID` (an
        EventSource does) to get, in order and once, what was folded meanwhile. Items come
        in the order they reached the timeline, not by event time. A comment line every 15 s
        keeps the stream open; a key revoked or rotated away ends it with an `end` event
        (data: the error envelope). Past a process's share of open streams: 503 with
        Retry-After. An id merged into another customer answers 308 to the survivor's
        stream.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: header
          name: Last-Event-ID
          required: false
          description: The `id` of the last item received; the stream resumes after it.
          schema: {type: string, pattern: "^[0-9]{1,17}-[0-9]{1,19}$"}
      responses:
        200:
          description: The stream (never ends on its own).
          content:
            text/event-stream:
              schema: {type: string}
        308: Merged
        400: BadRequest
        404: NotFound
    """
    secret = key_from_header()
    resume = resume_position()
    keys = resources().keys

    def key_still_reads() -> None:
        check_key(keys, secret, "read")

    return read_live(
        customer_id,
        NO_ARGS,
        lambda connection, team_id, live, _args: open_stream(
            connection, team_id, live, key_still_reads, resume
        ),
    )


def resume_position() -> StreamPosition | None:
    """Where the request's `Last-Event-ID` says to resume (None: from now); 400 if malformed."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return None
    position = StreamPosition.parse(raw)
    if position is None:
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an item this stream sent (digits-digits); "
            "drop the header to start from now.",
        )
    return position


def open_stream(
    connection: Connection,
    team_id: int,
    customer_id: int,
    still_allowed: Callable[[], object],
    resume: StreamPosition | None,
) -> Response:
    """The stream of a live customer of the team, from `resume` (or from now), as SSE.

    `still_allowed()` is called at each heartbeat and raises `ApiError` once the caller may
    no longer read (a revoked key, a signed-out session): the stream then ends with an
    `end` event carrying the error. The API's route and the console's use it alike.
    """
    listener = listener_with_room()
    # Subscribed before the first read, so nothing folded in between is missed.
    subscription = listener.subscribe(team_id, customer_id)
    try:
        start = resume or newest_position(connection, team_id, customer_id)
    except BaseException:
        listener.unsubscribe(subscription)
        raise
    # The generator runs after the view returned (and its request context is gone): it is
    # handed what it needs, and holds no Postgres connection between reads.
    body = _events(resources(), listener, subscription, start, still_allowed, resume is not None)
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _events(
    res: Resources,
    listener: Listener,
    subscription: Subscription,
    position: StreamPosition,
    still_allowed: Callable[[], object],
    catch_up: bool,
) -> Iterator[str]:
    team_id, customer_id = subscription.key
    engine = res.reads.engine
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: open\n\n"
        if catch_up:
            position, text = _caught_up(engine, team_id, customer_id, position)
            if text:
                yield text
        while True:
            try:
                notice = subscription.notices.get(timeout=res.settings.live_heartbeat_seconds)
            except queue.Empty:
                try:
                    still_allowed()
                except ApiError as error:
                    yield _event("end", json.dumps({"message": error.message, "code": error.code}))
                    return
                yield ": keep-alive\n\n"
                continue
            items: list[StreamItem] = []
            resync = ended = False
            for each in [notice, *_drained(subscription)]:  # what else arrived meanwhile, at once
                if each is RESYNC:
                    resync = True
                elif each == END:
                    ended = True
                elif isinstance(each, list):
                    items.extend(each)
            if ended:
                return  # the process is stopping: the client reconnects (Last-Event-ID) elsewhere
            if resync:
                position, text = _caught_up(engine, team_id, customer_id, position)
            else:
                position, text = _sent(items, position)
            if text:
                yield text
    finally:
        listener.unsubscribe(subscription)


def _drained(subscription: Subscription) -> list[list[StreamItem] | str | None]:
    found: list[list[StreamItem] | str | None] = []
    while not subscription.notices.empty():
        found.append(subscription.notices.get_nowait())
    return found


def _since(engine: Engine, team_id: int, customer_id: int, position: StreamPosition) -> list[StreamItem]:
    with engine.connect() as connection:
        return read_since(connection, team_id, customer_id, position, CATCH_UP_ITEMS)


def _caught_up(
    engine: Engine, team_id: int, customer_id: int, position: StreamPosition
) -> tuple[StreamPosition, str]:
    """Everything of the customer's timeline after `position`, read in pages."""
    parts: list[str] = []
    while True:
        items = _since(engine, team_id, customer_id, position)
        position, text = _sent(items, position)
        parts.append(text)
        if not items or len(items) < CATCH_UP_ITEMS:
            return position, "".join(parts)


def _sent(items: list[StreamItem], position: StreamPosition) -> tuple[StreamPosition, str]:
    """The SSE text of the items after `position`, and the position after them."""
    parts: list[str] = []
    for item in items:
        if item.position > position:
            parts.append(f"id: {item.position.text()}\n" + _event("item", item.item_json))
            position = item.position
    return position, "".join(parts)


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


def listener_with_room() -> Listener:
    """This process's listener, or a 503 with Retry-After when it holds its share of open
    streams already (LIVE_STREAMS_PER_PROCESS): every stream of the process, the API's and
    the console's, counts against that one share."""
    found: PerProcess[Listener] = current_app.extensions["timeline_live"]
    listener = found.get()
    limit = resources().settings.live_streams_per_process
    if listener.open >= limit:
        raise ApiError(
            503,
            "too_many_streams",
            f"This server holds {limit} open streams already; retry after {_BUSY_RETRY_SECONDS} seconds.",
            headers={"Retry-After": str(_BUSY_RETRY_SECONDS)},
        )
    return listener


def init_app(app: Flask) -> None:
    """After `app.resources.init_app`: the listener listens on the read engine's database."""
    res: Resources = app.extensions["timeline"]
    app.extensions["timeline_live"] = per_process_listener(res.reads.engine)
    app.register_blueprint(bp)
