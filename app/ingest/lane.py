"""Ingest: the destination URL and the Segment HTTP Tracking API routes (SPEC §2).

A 200 means every accepted event is committed in Postgres. Waking the fold happens
after the commit and may fail (Redis down) without failing the request: the sweep
finds stored-but-unfolded events later. See docs/ingest.md for every rule and why.

One request: read the body, authenticate, prepare the batch (`schemas/batch.py`),
take from the rate limit, store, wake the fold, answer. These are the hottest routes:
`IngestLane` answers their POSTs in front of Flask's dispatch, with the app's own key
cache, rate limits, debugger ledger and fold waker (`Lane`, gathered at start-up) and
the app's error handlers, but without the request context, the routing, the hooks and
the Response objects that cost more CPU than the request's own work. The Flask views
below run the same steps; they document the routes (OpenAPI) and answer when the lane
is not in front.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from app.auth import check_browser_key, check_key, credentials_in
from app.errors import ApiError
from app.ingest import cors, ledger
from app.ingest.body import decode_content, parse_json, read_raw_body
from app.ingest.ledger import IngestLedger
from app.ingest.ratelimit import RateLimits
from app.ingest.waker import Waker
from app.resources import Resources
from app.serving import metrics
from schemas.batch import MAX_BATCH_EVENTS, PreparedBatch, Scan, body_write_key, prepare_batch
from schemas.segment import EventRejected
from store.apikeys import AuthenticatedKey
from store.events import store_events
from store.retention import split_expired

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

__all__ = ["MAX_BATCH_EVENTS", "SHORT_ROUTES", "SINGLE_ROUTES", "IngestLane", "init_app"]

SINGLE_ROUTES = ("track", "identify", "page", "screen", "group", "alias")
# analytics.js posts each event to `/v1/` + the first letter of its type, a batch to `/v1/b`.
SHORT_ROUTES = {kind[0]: kind for kind in SINGLE_ROUTES}
# analytics.js's own usage counters (`{"series": [...]}`, no key), posted to `apiHost/m`
# once apiHost names us: answered 200 and dropped, so the page logs no error.
METRICS_RULE = "/v1/m"
# The common answer, encoded once (what jsonify would write for it).
_SUCCESS_BODY = b'{"success":true}\n'
_SUCCESS_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_SUCCESS_BODY)))]

Answer = tuple[int, list[tuple[str, str]], bytes]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Route:
    """An ingest route: its URL rule and how it reads the body."""

    rule: str
    forced_type: str | None = None  # the Tracking API's per-type routes
    batch_only: bool = False


ROUTES = {
    route.rule: route
    for route in (
        Route("/v1/segment"),
        Route("/v1/batch", batch_only=True),
        Route("/v1/import", batch_only=True),
        *(Route(f"/v1/{kind}", forced_type=kind) for kind in SINGLE_ROUTES),
        Route("/v1/b", batch_only=True),
        *(Route(f"/v1/{short}", forced_type=kind) for short, kind in SHORT_ROUTES.items()),
    )
}
# The paths that answer CORS (app/ingest/cors.py): the ingest routes and analytics.js's counters.
CORS_PATHS = frozenset([*ROUTES, METRICS_RULE])


@dataclass
class Lane:
    """What an ingest request uses of its app, gathered once at `init_app`.

    Plain objects, no Flask: the lane answers without pushing a request context.
    `resources` is the app's own (`app.extensions["timeline"]`); its key cache is read
    on each request, so a test that swaps it is obeyed.
    """

    resources: Resources
    limits: RateLimits
    ledger: IngestLedger
    waker: Waker


def lane_of(app: Flask) -> Lane:
    found: Lane = app.extensions["ingest_lane"]
    return found


def ingest(lane: Lane, route: Route, environ: dict[str, Any]) -> Answer:
    """One ingest request: (status, headers, body), or the ApiError to answer."""
    notes = ledger.RequestNotes(route.rule)
    try:
        return _ingest(lane, route, environ, notes)
    except ApiError as error:
        metrics.request_rejected(error.code)
        ledger.request_refused(lane.ledger, notes, error)
        refused_content = 400 <= error.status < 500 and error.status != 429
        if notes.team_id is not None and refused_content and not notes.events_refused:
            lane.limits.charge_refused(notes.team_id, 1)  # a body refused whole costs an event
        raise
    finally:
        if notes.turn:
            lane.limits.team_turns.leave(notes.turn)


def _ingest(lane: Lane, route: Route, environ: dict[str, Any], notes: ledger.RequestNotes) -> Answer:
    received_at = datetime.now(UTC)
    keys = lane.resources.keys
    # The body is read first (bounded): answering before reading it would make the
    # server close a socket with unread data, and the client may see a reset instead
    # of our 401, and retry. A key in the header is then checked before the body is
    # inflated and parsed, so a bad key is a 401 whatever the body, and costs little.
    raw = read_raw_body(environ)
    header_key = credentials_in(environ.get("HTTP_AUTHORIZATION", ""))
    key = check_key(keys, header_key, "ingest") if header_key else None
    _begin(lane, notes, key, raw, len(raw))
    data = decode_content(environ, raw)
    if key is not None and len(data) > len(raw):
        lane.limits.charge_bytes(key.team_id, len(data) - len(raw))  # an inflated body pays its size
    scan = Scan.of_bytes(data)
    body = parse_json(data, scan)
    if key is None:
        key = check_key(keys, body_write_key(body), "ingest")
        _begin(lane, notes, key, raw, max(len(raw), len(data)))
    check_browser_key(key, environ.get("HTTP_ORIGIN"))
    batch = _prepared(lane, notes, route, body, received_at, scan)
    try:
        lane.limits.take_events(key.team_id, len(batch.events))
    except ApiError:
        metrics.events_rate_limited(batch.events)
        raise
    # Older than the team's retention already (docs/retention.md): answered 200, so
    # Segment does not retry it, and not stored; the debugger counts it as `expired`.
    stored, expired = split_expired(batch.events, lane.resources.retention.cutoff(key.team_id, received_at))
    result = store_events(lane.resources.engine, key.team_id, stored, received_at)
    metrics.events_accepted(stored)
    ledger.events_stored(lane.ledger, notes, stored, result)
    ledger.events_expired(lane.ledger, notes, expired)
    # Wake the fold after the commit (app/ingest/waker.py): memory only here, the process's
    # waker thread makes the Redis call; a Redis failure only delays the fold (the sweep
    # queues stored-but-unfolded events).
    lane.waker.mark(key.team_id)
    if not batch.is_batch:
        return 200, _SUCCESS_HEADERS, _SUCCESS_BODY
    answer = {
        "success": True,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "expired": len(expired),
        "rejected": [rejection.as_answer() for rejection in batch.rejected],
    }
    encoded = (json.dumps(answer, separators=(",", ":")) + "\n").encode()
    return 200, [("Content-Type", "application/json"), ("Content-Length", str(len(encoded)))], encoded


def _begin(
    lane: Lane, notes: ledger.RequestNotes, key: AuthenticatedKey | None, raw: bytes, size: int
) -> None:
    """The team is known: the debugger keeps what is refused from here on, the team's
    ingest budgets are checked before any parsing (a 429, cheaply, for a team over them),
    and the request waits for one of the team's turns (app/ingest/ratelimit.py `TeamTurns`)."""
    ledger.begin(notes, key, raw)
    if key is not None:
        lane.limits.admit(key.team_id, size)
        if not notes.turn and lane.limits.team_turns.enter(key.team_id):
            notes.turn = key.team_id  # given back when the request ends (`ingest`)


def _prepared(
    lane: Lane, notes: ledger.RequestNotes, route: Route, body: Any, received_at: datetime, scan: Scan
) -> PreparedBatch:
    """The body prepared (schemas/batch.py); a refusal of the whole request as an ApiError."""
    body, batch_only = _array_as_batch(route, body)
    try:
        batch = prepare_batch(
            body, received_at, forced_type=route.forced_type, batch_only=batch_only, scan=scan
        )
    except EventRejected as error:
        raise _api_error(error) from None
    for item, rejection in zip(batch.rejected_items, batch.rejected, strict=True):
        metrics.events_rejected(item, rejection.error.code)
        ledger.event_refused(lane.ledger, notes, item, rejection.error)
    if batch.rejected and notes.team_id is not None:
        lane.limits.charge_refused(notes.team_id, len(batch.rejected))  # paid like stored ones
    refusal = batch.refusal()
    if refusal is not None:
        raise _api_error(refusal)
    return batch


def _array_as_batch(route: Route, body: Any) -> tuple[Any, bool]:
    """A top-level array of events as the batch it is: (body, batch_only) for prepare_batch.

    Segment's Webhook destination, batching on, posts a bare JSON array. It is a batch
    wherever a batch is taken, with every batch rule (SPEC §2); it has no top level, so
    no batch-level context or integrations to merge. A per-type route takes one event:
    an array there is a 400 that names the route to use.
    """
    if not isinstance(body, list):
        return body, route.batch_only
    if route.forced_type is not None:
        message = (
            f"{route.rule} takes one {route.forced_type} event as a JSON object, not an array; "
            "send an array of events to /v1/batch."
        )
        raise ApiError(400, "invalid_event", message, {"body": [message]})
    return {"batch": body}, True


def _api_error(error: EventRejected) -> ApiError:
    return ApiError(error.status, error.code, error.message, error.errors or None)


class IngestLane:
    """WSGI middleware: POSTs to the ingest routes answered in front of Flask's dispatch.

    Inside the app (installed as `app.wsgi_app`), with the app's own key cache, limits,
    debugger ledger and fold waker (`Lane`), and no request context: creating and
    pushing one cost more CPU than the request's own Python work. Errors are rendered
    by the app's own error handlers (the one envelope), in a request context pushed
    then. Every answer on an ingest path carries the CORS headers, and a preflight
    `OPTIONS` is answered here (app/ingest/cors.py). Anything else (other paths, other methods)
    goes to Flask. Flask's before/after-request hooks do not run for these POSTs; the
    request latency metric is observed here instead.
    """

    def __init__(self, app: Flask, inner: WSGIApp):
        self.app = app
        self.inner = inner

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in CORS_PATHS:
            return self.inner(environ, start_response)
        return self._answer(path, environ, cors.answering(start_response))

    def _answer(self, path: str, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """An ingest path's answer, CORS headers added by `start_response` (app/ingest/cors.py)."""
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS":
            return cors.preflight(environ, start_response)
        route = ROUTES.get(path)
        if method != "POST":
            return self.inner(environ, start_response)  # Flask's 405, with CORS headers
        if route is None:
            return self._metrics_counters(environ, start_response)
        started = time.perf_counter()
        lane = lane_of(self.app)
        try:
            status, headers, body = ingest(lane, route, environ)
        except Exception as error:
            if isinstance(error, ApiError):
                lane.limits.refusal_hold.pause(error)  # a 429 only (app/ingest/ratelimit.py `RefusalHold`)
            with self.app.request_context(environ):
                response = self._error_response(error)
            metrics.request_observed(route.rule, response.status_code, time.perf_counter() - started)
            return response(environ, start_response)
        metrics.request_observed(route.rule, status, time.perf_counter() - started)
        start_response("200 OK", headers)
        return [body]

    def _metrics_counters(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """analytics.js's usage counters (METRICS_RULE): read (bounded), dropped, 200."""
        try:
            read_raw_body(environ)  # bounded: over 500 KiB is a 413
        except Exception as error:
            with self.app.request_context(environ):
                response = self._error_response(error)
            return response(environ, start_response)
        start_response("200 OK", _SUCCESS_HEADERS)
        return [_SUCCESS_BODY]

    def _error_response(self, error: Exception) -> Response:
        """The app's error handlers' answer (app/errors.py), as Flask would give it."""
        try:
            return self.app.make_response(self.app.handle_user_exception(error))
        except Exception as unhandled:
            return self.app.make_response(self.app.handle_exception(unhandled))


def _view(route: Route) -> Callable[[], Response]:
    def view() -> Response:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        status, headers, body = ingest(lane_of(app), route, request.environ)
        return Response(body, status=status, headers=headers)

    return view


def _register(route: Route, name: str, doc: str) -> None:
    view = _view(route)
    view.__name__ = name
    view.__doc__ = doc
    bp.add_url_rule(route.rule, view_func=view, methods=["POST"])


def _register_routes() -> None:
    _register(ROUTES["/v1/segment"], "segment", 'The destination URL: one event, or {"batch": [...]}.')
    batch_doc = 'Tracking API batch: {"batch": [...], "context": ..., "integrations": ...}.'
    batch = _view(ROUTES["/v1/batch"])
    batch.__name__, batch.__doc__ = "batch", batch_doc
    # One view at two URLs, as before (the OpenAPI document lists both under it).
    bp.add_url_rule("/v1/batch", view_func=batch, methods=["POST"])
    bp.add_url_rule("/v1/import", view_func=batch, methods=["POST"])
    for kind in SINGLE_ROUTES:
        doc = f"Tracking API {kind}: one event, its type given by the route."
        _register(ROUTES[f"/v1/{kind}"], f"single_{kind}", doc)
    _register_short_routes()


def _register_short_routes() -> None:
    """analytics.js's short routes, each its long twin (SPEC §2).

    Its counters' route (METRICS_RULE) is the lane's alone: it takes no key, and the
    read API's documents list only what a key is needed for.
    """
    _register(ROUTES["/v1/b"], "short_batch", "analytics.js batching: the Tracking API batch at /v1/b.")
    for short, kind in SHORT_ROUTES.items():
        doc = f"analytics.js {kind}: /v1/{kind} at the route analytics.js posts it to."
        _register(ROUTES[f"/v1/{short}"], f"short_{kind}", doc)


@bp.after_request
def _cors_headers(response: Response) -> Response:
    """CORS on the views' answers too, for an app served without the lane in front."""
    for name, value in cors.ANSWER_HEADERS:
        response.headers[name] = value
    return response


_register_routes()


def _make_waker(app: Flask) -> Waker:
    res: Resources = app.extensions["timeline"]

    def failed(team_id: int, error: BaseException) -> None:
        metrics.FOLD_WAKE_FAILURES.inc()

    # TESTING: wake inline, so a test that posts and then runs the fold jobs finds them queued.
    return Waker(res.fold_queue.request_fold, inline=bool(app.config.get("TESTING")), on_failure=failed)


def init_app(app: Flask) -> None:
    res: Resources = app.extensions["timeline"]
    app.extensions["ingest_lane"] = Lane(
        resources=res,
        limits=app.extensions["rate_limits"],
        ledger=ledger.init_app(app, res.engine),
        waker=_make_waker(app),
    )
    app.register_blueprint(bp)
    app.wsgi_app = IngestLane(app, app.wsgi_app)  # type: ignore[method-assign]
