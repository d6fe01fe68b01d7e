"""Ingest: the destination URL and the Segment HTTP Tracking API routes (SPEC §2).

A 200 means every accepted event is committed in Postgres. Waking the fold happens
after the commit and may fail (Redis down) without failing the request: the sweep
finds stored-but-unfolded events later. See docs/ingest.md for every rule and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from app import ingest_ledger, metrics
from app.auth import authenticate, key_from_header
from app.body import (
    MAX_DEPTH,
    decode_content,
    depth,
    make_storable,
    needs_deep_check,
    parse_json,
    read_raw_body,
)
from app.errors import ApiError
from app.ratelimit import check_rate_limit
from app.resources import Resources, resources
from app.waker import Waker
from schemas.segment import MAX_EVENT_BYTES, EventRejected, PreparedEvent, prepare_event
from store.apikeys import AuthenticatedKey
from store.events import store_events
from workers.signal import request_fold

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

MAX_BATCH_EVENTS = 2500
SINGLE_ROUTES = ("track", "identify", "page", "screen", "group", "alias")
_BATCH_DEFAULTS = ("context", "integrations")
_REJECTED_ECHO_CHARS = 255
_SUCCESS_BODY = b'{"success":true}\n'


@bp.post("/v1/segment")
def segment() -> Response:
    """The destination URL: one event, or {"batch": [...]}."""
    return _ingest(forced_type=None, batch_only=False)


@bp.post("/v1/batch")
@bp.post("/v1/import")
def batch() -> Response:
    """Tracking API batch: {"batch": [...], "context": ..., "integrations": ...}."""
    return _ingest(forced_type=None, batch_only=True)


def _single_route(kind: str) -> Callable[[], Response]:
    def view() -> Response:
        return _ingest(forced_type=kind, batch_only=False)

    view.__name__ = f"single_{kind}"
    view.__doc__ = f"Tracking API {kind}: one event, its type given by the route."
    return view


for _kind in SINGLE_ROUTES:
    bp.add_url_rule(f"/v1/{_kind}", view_func=_single_route(_kind), methods=["POST"])


def _ingest(forced_type: str | None, batch_only: bool) -> Response:
    try:
        return _ingest_request(forced_type, batch_only)
    except ApiError as error:
        metrics.request_rejected(error.code)
        ingest_ledger.request_refused(error)
        raise


def _ingest_request(forced_type: str | None, batch_only: bool) -> Response:
    received_at = datetime.now(UTC)
    # The body is read first (bounded): answering before reading it would make the
    # server close a socket with unread data, and the client may see a reset instead
    # of our 401, and retry. A key in the header is then checked before the body is
    # inflated and parsed, so a bad key is a 401 whatever the body, and costs little.
    raw = read_raw_body()
    header_key = key_from_header()
    key = authenticate("ingest", header_key=header_key) if header_key else None
    ingest_ledger.begin(key, raw)
    data = decode_content(raw)
    body = parse_json(data)
    # The envelope's keys by their lower-case name (Segment: top-level keys in any casing).
    envelope = {name.lower(): value for name, value in body.items()} if isinstance(body, dict) else {}
    if key is None:
        write_key = envelope.get("writekey")
        key = authenticate("ingest", body_key=write_key if isinstance(write_key, str) else None)
        ingest_ledger.begin(key, raw)

    is_batch = batch_only or (forced_type is None and "batch" in envelope)
    items, defaults = _batch_items(envelope) if is_batch else ([body], {})

    check_nul, check_depth = needs_deep_check(data)
    prepared: list[PreparedEvent] = []
    rejected: list[dict[str, Any]] = []
    first_error: EventRejected | None = None
    for index, item in enumerate(items):
        try:
            event = _storable_event(item, defaults, len(data), check_nul, check_depth)
            prepared.append(prepare_event(event, received_at, forced_type=forced_type))
        except EventRejected as error:
            first_error = first_error or error
            metrics.events_rejected(item, error.code)
            ingest_ledger.event_refused(item, error)
            rejected.append(
                {
                    "index": index,
                    "messageId": _message_id_of(item),
                    "errors": error.errors or {"_event": [error.message]},
                    "message": error.message,
                }
            )

    if not prepared:
        assert first_error is not None
        if not is_batch:
            errors = first_error.errors or {"_event": [first_error.message]}
            raise ApiError(first_error.status, first_error.code, first_error.message, errors)
        raise ApiError(
            400,
            "invalid_batch",
            f"Every event of the batch is invalid; the first: {first_error.message}",
            {str(r["index"]): r["errors"] for r in rejected[:100]},
        )

    try:
        check_rate_limit(key.team_id, len(prepared))
    except ApiError:
        metrics.events_rate_limited(prepared)
        raise
    result = store_events(resources().engine, key.team_id, prepared, received_at)
    metrics.events_accepted(prepared)
    ingest_ledger.events_stored(prepared, result)
    _wake_fold(key)

    if not is_batch:
        # The common answer, encoded once (what jsonify would write for it).
        return Response(_SUCCESS_BODY, content_type="application/json")
    answer: dict[str, Any] = {"success": True}
    answer.update(accepted=result.accepted, duplicates=result.duplicates, rejected=rejected)
    return jsonify(answer)


def _batch_items(envelope: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The batch's events and the batch-level defaults to merge into each."""
    items = envelope.get("batch")
    if not isinstance(items, list):
        raise ApiError(
            400,
            "invalid_batch",
            'A batch body must be {"batch": [events...]}.',
            {"batch": ["Must be an array of events."]},
        )
    if len(items) > MAX_BATCH_EVENTS:
        raise ApiError(
            413,
            "batch_too_large",
            f"The batch has {len(items)} events; send at most {MAX_BATCH_EVENTS} per request.",
        )
    if not items:
        raise ApiError(
            400,
            "invalid_batch",
            "The batch is empty; send at least one event.",
            {"batch": ["Must hold at least one event."]},
        )
    defaults = {k: envelope[k] for k in _BATCH_DEFAULTS if isinstance(envelope.get(k), dict)}
    return items, defaults


def _storable_event(
    item: Any, defaults: dict[str, Any], body_bytes: int, check_nul: bool, check_depth: bool
) -> Any:
    """The item merged with the batch defaults, bounded, and holding only storable text."""
    if not isinstance(item, dict):
        return item  # prepare_event says what is wrong with it
    if defaults:
        item = _merge_defaults(item, defaults)
    if check_depth and depth(item) > MAX_DEPTH:
        raise EventRejected(
            400,
            "too_deep",
            f"The event nests objects and arrays deeper than {MAX_DEPTH} levels; flatten it.",
        )
    if check_nul:
        item = make_storable(item)
    # A body no larger than the limit cannot hold a larger event: only big bodies pay this.
    if body_bytes > MAX_EVENT_BYTES:
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_EVENT_BYTES:
            raise EventRejected(
                413,
                "event_too_large",
                f"The event is {size / 1024:.1f} KiB; an event may be at most "
                f"{MAX_EVENT_BYTES // 1024} KiB. Trim its properties, traits or context.",
            )
    return item


def _merge_defaults(item: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Batch-level context/integrations under each event's own (the event's keys win)."""
    merged = dict(item)
    lower = {key.lower(): key for key in item}
    for name, default in defaults.items():
        own_key = lower.get(name, name)
        own = item.get(own_key)
        if own is None:
            merged[own_key] = dict(default)
        elif isinstance(own, dict):
            merged[own_key] = {**default, **own}
    return merged


def _message_id_of(item: Any) -> str | int | None:
    """The item's messageId as sent, to name it in a rejection (bounded in size)."""
    if isinstance(item, dict):
        for key, value in item.items():
            if key.lower() == "messageid":
                if isinstance(value, str):
                    return make_storable(value[:_REJECTED_ECHO_CHARS])  # type: ignore[no-any-return]
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


def _wake_fold(key: AuthenticatedKey) -> None:
    """Make sure a fold is queued for the team, after the commit (app/waker.py).

    Memory only on the request path: the process's waker thread does the Redis call. A
    Redis failure only delays the fold (the sweep queues stored-but-unfolded events).
    """
    waker = current_app.extensions.get("ingest_waker")
    if waker is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        waker = current_app.extensions.setdefault("ingest_waker", _make_waker(app))
    waker.mark(key.team_id)


def _make_waker(app: Flask) -> Waker:
    res: Resources = app.extensions["timeline"]
    redis, queue, prefix = res.redis, res.settings.fold_queue, res.settings.redis_prefix

    def wake(team_id: int) -> None:
        request_fold(redis, queue, prefix, team_id)

    def failed(team_id: int, error: BaseException) -> None:
        metrics.FOLD_WAKE_FAILURES.inc()

    # TESTING: wake inline, so a test that posts and then runs the fold jobs finds them queued.
    return Waker(wake, inline=bool(app.config.get("TESTING")), on_failure=failed)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
