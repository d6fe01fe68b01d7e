"""Ingest: the destination URL and the Segment HTTP Tracking API routes (SPEC §2).

A 200 means every accepted event is committed in Postgres. Waking the fold happens
after the commit and may fail (Redis down) without failing the request: the sweep
finds stored-but-unfolded events later.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, jsonify
from redis.exceptions import RedisError

from app import metrics
from app.auth import authenticate
from app.body import (
    MAX_DEPTH,
    depth,
    needs_deep_check,
    parse_json,
    read_body_bytes,
    unstorable_path,
)
from app.errors import ApiError
from app.ratelimit import check_rate_limit
from app.resources import resources
from schemas.segment import MAX_EVENT_BYTES, EventRejected, PreparedEvent, prepare_event
from store.events import store_events
from workers.signal import request_fold

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

MAX_BATCH_EVENTS = 2500
SINGLE_ROUTES = ("track", "identify", "page", "screen", "group", "alias")
_BATCH_DEFAULTS = ("context", "integrations")


@bp.post("/v1/segment")
def segment() -> Response:
    """The destination URL: one event, or {"batch": [...]}."""
    return _ingest(forced_type=None, batch_only=False)


@bp.post("/v1/batch")
@bp.post("/v1/import")
def batch() -> Response:
    return _ingest(forced_type=None, batch_only=True)


def _single_route(kind: str) -> Any:
    def view() -> Response:
        return _ingest(forced_type=kind, batch_only=False)

    view.__name__ = f"single_{kind}"
    return view


for _kind in SINGLE_ROUTES:
    bp.add_url_rule(f"/v1/{_kind}", view_func=_single_route(_kind), methods=["POST"])


def _envelope_keys(body: dict[str, Any]) -> dict[str, Any]:
    """The batch envelope's keys by their lower-case name (Segment: any casing)."""
    return {key.lower(): value for key, value in body.items()}


def _ingest(forced_type: str | None, batch_only: bool) -> Response:
    received_at = datetime.now(UTC)
    data = read_body_bytes()
    body = parse_json(data)
    envelope = _envelope_keys(body) if isinstance(body, dict) else {}
    write_key = envelope.get("writekey")
    key = authenticate("ingest", body_key=write_key if isinstance(write_key, str) else None)

    is_batch = batch_only or (forced_type is None and "batch" in envelope)
    if is_batch:
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
                413, "batch_too_large", f"The batch has {len(items)} events; send at most {MAX_BATCH_EVENTS}."
            )
        if not items:
            raise ApiError(400, "invalid_batch", "The batch is empty; send at least one event.")
        defaults = {k: envelope[k] for k in _BATCH_DEFAULTS if isinstance(envelope.get(k), dict)}
    else:
        items = [body]
        defaults = {}

    check_nul, check_depth = needs_deep_check(data)
    prepared: list[PreparedEvent] = []
    rejected: list[dict[str, Any]] = []
    first_error: EventRejected | None = None
    for index, item in enumerate(items):
        try:
            if defaults and isinstance(item, dict):
                item = _merge_defaults(item, defaults)
            _check_storable(item, len(data), check_nul, check_depth)
            prepared.append(prepare_event(item, received_at, forced_type=forced_type))
        except EventRejected as error:
            first_error = first_error or error
            metrics.events_rejected(item, error.code)
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
            raise ApiError(
                first_error.status, first_error.code, first_error.message, first_error.errors or None
            )
        raise ApiError(
            400,
            "invalid_batch",
            f"Every event of the batch is invalid; the first: {first_error.message}",
            {str(r["index"]): r["errors"] for r in rejected[:100]},
        )

    check_rate_limit(key.team_id, len(prepared))
    result = store_events(resources().engine, key.team_id, prepared, received_at)
    metrics.events_accepted(prepared)
    _wake_fold(key.team_id)

    answer: dict[str, Any] = {"success": True}
    if is_batch:
        answer.update(accepted=result.accepted, duplicates=result.duplicates, rejected=rejected)
    return jsonify(answer)


def _merge_defaults(item: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Batch-level context/integrations under each event's own (the event's keys win)."""
    merged = dict(item)
    lower = {key.lower(): key for key in item}
    for name, default in defaults.items():
        own_key = lower.get(name)
        own = item.get(own_key) if own_key else None
        if own is None:
            merged[own_key or name] = dict(default)
        elif isinstance(own, dict):
            merged[own_key or name] = {**default, **own}
    return merged


def _check_storable(item: Any, body_bytes: int, check_nul: bool, check_depth: bool) -> None:
    """Reject what Postgres cannot store or what is over the per-event size."""
    if check_depth and depth(item) > MAX_DEPTH:
        raise EventRejected(400, "too_deep", f"The event nests deeper than {MAX_DEPTH} levels.")
    if check_nul:
        path = unstorable_path(item)
        if path is not None:
            raise EventRejected(
                400,
                "unstorable_text",
                f"{path} holds a NUL character or a lone UTF-16 surrogate, which cannot be "
                "stored; remove it.",
                {path: ["Contains \\u0000 or an unpaired surrogate."]},
            )
    if body_bytes > MAX_EVENT_BYTES:  # a smaller body cannot hold a larger event
        encoded = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        size = len(encoded.encode("utf-8", "surrogatepass"))
        if size > MAX_EVENT_BYTES:
            raise EventRejected(
                413,
                "event_too_large",
                f"The event is {size // 1024} KiB; an event may be at most "
                f"{MAX_EVENT_BYTES // 1024} KiB. Trim its properties or traits.",
            )


def _message_id_of(item: Any) -> Any:
    if isinstance(item, dict):
        for key, value in item.items():
            if key.lower() == "messageid" and isinstance(value, str | int):
                return value
    return None


def _wake_fold(team_id: int) -> None:
    res = resources()
    try:
        request_fold(res.redis, res.settings.fold_queue, res.settings.redis_prefix, team_id)
    except RedisError as error:
        # The events are committed; the sweep will queue them when Redis is back.
        log.warning("could not queue fold for team %s: %s", team_id, type(error).__name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
