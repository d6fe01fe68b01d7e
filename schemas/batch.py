"""Preparing a batch: decoded JSON in, rows to store and per-event refusals out.

A pure function of the decoded body (no Flask, no database): the ingest view calls it
between authentication and storage, and a command that imports events from a file can
call `prepare_events` with exactly the same rules. What it applies, in order:

- the envelope (SPEC §2): `{"batch": [...]}` (any casing of the top-level keys) with at
  most MAX_BATCH_EVENTS events, its top-level `context` and `integrations` merged into
  each event one level deep (the event's own keys win);
- per event: depth (MAX_DEPTH), text Postgres refuses (NUL, lone surrogates: replaced
  by U+FFFD), size (MAX_EVENT_BYTES as compact JSON after the merge), then the Spec
  (`schemas.segment.prepare_event`). A bad event is refused alone, with its index.

`Scan` says which of those walks the raw bytes already ruled out (`Scan.of_bytes`); a
caller without raw bytes passes `Scan.EVERYTHING` and every event is walked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from schemas.segment import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    EventRejected,
    PreparedEvent,
    derive_message_id,
    prepare_event,
)

MAX_BATCH_EVENTS = 2500
BATCH_DEFAULTS = ("context", "integrations")
REJECTED_ECHO_CHARS = 255

# Strict UTF-8 refuses raw surrogate bytes and JSON refuses raw control characters, so
# in a body a NUL or a lone surrogate can only arrive as a \u escape.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# What Postgres text and JSONB cannot hold: NUL, and UTF-16 surrogates (valid pairs were
# already joined into one code point by the JSON decoder, so any left here are alone).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


class BatchRejected(EventRejected):
    """The request as a whole is refused (bad envelope, or every event invalid)."""


@dataclass(frozen=True)
class Scan:
    """Which per-event walks the raw body may need (False: the bytes rule it out)."""

    unstorable_text: bool
    deep: bool
    large: bool

    EVERYTHING: ClassVar[Scan]

    @classmethod
    def of_bytes(cls, data: bytes) -> Scan:
        """Decided on the raw (inflated) body: one regex scan and two counts, in C."""
        return _SCANS[
            (
                _SUSPECT_ESCAPE.search(data) is not None,
                data.count(b"{") + data.count(b"[") > MAX_DEPTH,
                # A body no larger than the limit cannot hold a larger event.
                len(data) > MAX_EVENT_BYTES,
            )
        ]


Scan.EVERYTHING = Scan(unstorable_text=True, deep=True, large=True)
# The eight possible answers, made once (`of_bytes` runs once per request or imported line).
_SCANS = {
    (unstorable, deep, large): Scan(unstorable, deep, large)
    for unstorable in (False, True)
    for deep in (False, True)
    for large in (False, True)
}


@dataclass(frozen=True)
class Rejection:
    """One refused event of a batch, as the answer lists it."""

    index: int
    message_id: str | int | None
    error: EventRejected

    def as_answer(self) -> dict[str, Any]:
        """`{index, messageId, errors, message, status}` (SPEC §2); `status`: the event's alone."""
        return {
            "index": self.index,
            "messageId": self.message_id,
            "errors": self.error.errors or {"_event": [self.error.message]},
            "message": self.error.message,
            "status": self.error.status,
        }


@dataclass
class PreparedBatch:
    """What a request's body holds: the events to store and the events refused."""

    is_batch: bool
    events: list[PreparedEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # The raw item of each refusal (its `type` labels the metric), in `rejected`'s order.
    rejected_items: list[Any] = field(default_factory=list)

    def refusal(self) -> EventRejected | None:
        """Why nothing of the request can be stored, or None: some events can.

        A single event answers with its own refusal; a batch whose every event is
        refused is a 400 `invalid_batch` that lists them (the first hundred).
        """
        if self.events:
            return None
        first = self.rejected[0].error
        if not self.is_batch:
            errors = first.errors or {"_event": [first.message]}
            return EventRejected(first.status, first.code, first.message, errors)
        return BatchRejected(
            400,
            "invalid_batch",
            f"Every event of the batch is invalid; the first: {first.message}",
            {str(r.index): r.as_answer()["errors"] for r in self.rejected[:100]},
        )


def body_write_key(body: Any) -> str | None:
    """The body's `writeKey` (top level, any casing), if it is a string."""
    if not isinstance(body, dict):
        return None
    for name, value in body.items():
        if name.lower() == "writekey" and isinstance(value, str):
            return value
    return None


def prepare_batch(
    body: Any,
    received_at: datetime,
    *,
    forced_type: str | None = None,
    batch_only: bool = False,
    scan: Scan = Scan.EVERYTHING,
) -> PreparedBatch:
    """A request's decoded body prepared: one event, or `{"batch": [...]}`.

    `forced_type`: the Tracking API route's type (a single event whatever the body);
    `batch_only`: the body must be a batch (`/v1/batch`, `/v1/import`). A bad envelope
    raises BatchRejected; refused events are listed, and `refusal()` says whether the
    request as a whole must be refused.
    """
    # The envelope's keys by their lower-case name (Segment: top-level keys in any casing).
    envelope = {name.lower(): value for name, value in body.items()} if isinstance(body, dict) else {}
    if batch_only or (forced_type is None and "batch" in envelope):
        items, defaults = _batch_items(envelope)
        return prepare_events(
            items, received_at, defaults=defaults, scan=scan, sent_at=envelope.get("sentat")
        )
    prepared = prepare_events([body], received_at, forced_type=forced_type, scan=scan)
    prepared.is_batch = False
    return prepared


def prepare_events(
    items: list[Any],
    received_at: datetime,
    *,
    forced_type: str | None = None,
    defaults: dict[str, Any] | None = None,
    scan: Scan = Scan.EVERYTHING,
    sent_at: Any = None,
) -> PreparedBatch:
    """Each decoded event prepared or refused alone: the rows to store and the refusals.

    `sent_at`: the batch's own `sentAt`, for events without a messageId. Identical
    copies of an event without a messageId in one request are as many events, each its
    own id (`schemas.segment.derive_message_id`'s occurrence).
    """
    prepared = PreparedBatch(is_batch=True)
    derived: dict[str, int] = {}
    for index, item in enumerate(items):
        sent_id = _message_id_of(item)  # before preparing: a derived id is added to the item
        try:
            event = _prepare_one(item, received_at, forced_type, defaults, scan, sent_at)
            if sent_id in (None, "") and event.message_id.startswith("derived-"):
                copies = derived.get(event.message_id, 0)
                derived[event.message_id] = copies + 1
                if copies:
                    event = _another_copy(event, sent_at, copies)
            prepared.events.append(event)
        except EventRejected as error:
            prepared.rejected.append(Rejection(index, _message_id_of(item), error))
            prepared.rejected_items.append(item)
    return prepared


def prepare_one(
    item: Any, received_at: datetime, *, scan: Scan = Scan.EVERYTHING, archived: bool = False
) -> PreparedEvent:
    """One decoded event prepared as `prepare_events([item], ...)` would, or EventRejected.

    For a caller that takes events one at a time (the import, a line each): the same
    steps, without a PreparedBatch around each event. `archived`: a stored record read
    again (an import's line), whose derived messageId is never fresh (`derive_message_id`).
    """
    return _prepare_one(item, received_at, None, None, scan, archived=archived)


def _batch_items(envelope: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The batch's events and the batch-level defaults to merge into each."""
    items = envelope.get("batch")
    if not isinstance(items, list):
        raise BatchRejected(
            400,
            "invalid_batch",
            'A batch body must be {"batch": [events...]}.',
            {"batch": ["Must be an array of events."]},
        )
    if len(items) > MAX_BATCH_EVENTS:
        raise BatchRejected(
            413,
            "batch_too_large",
            f"The batch has {len(items)} events; send at most {MAX_BATCH_EVENTS} per request.",
        )
    if not items:
        raise BatchRejected(
            400,
            "invalid_batch",
            "The batch is empty; send at least one event.",
            {"batch": ["Must hold at least one event."]},
        )
    defaults = {k: envelope[k] for k in BATCH_DEFAULTS if isinstance(envelope.get(k), dict)}
    return items, defaults


def _prepare_one(
    item: Any,
    received_at: datetime,
    forced_type: str | None,
    defaults: dict[str, Any] | None,
    scan: Scan,
    sent_at: Any = None,
    archived: bool = False,
) -> PreparedEvent:
    return prepare_event(
        _storable_event(item, defaults, scan),
        received_at,
        forced_type=forced_type,
        sent_at=sent_at,
        archived=archived,
    )


def _another_copy(event: PreparedEvent, sent_at: Any, occurrence: int) -> PreparedEvent:
    """The `occurrence`-th identical copy (without a messageId) in one request: its own id."""
    message_id = derive_message_id(event.raw, sent_at, occurrence)
    event.raw["messageId"] = message_id
    return replace(event, message_id=message_id)


def _storable_event(item: Any, defaults: dict[str, Any] | None, scan: Scan) -> Any:
    """The item merged with the batch defaults, bounded, and holding only storable text."""
    if not isinstance(item, dict):
        return item  # prepare_event says what is wrong with it
    if defaults:
        item = _merge_defaults(item, defaults)
    if scan.deep and depth(item) > MAX_DEPTH:
        raise EventRejected(
            400,
            "too_deep",
            f"The event nests objects and arrays deeper than {MAX_DEPTH} levels; flatten it.",
        )
    if scan.unstorable_text:
        item = make_storable(item)
    if scan.large:
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
                    return make_storable(value[:REJECTED_ECHO_CHARS])  # type: ignore[no-any-return]
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


def make_storable(value: Any) -> Any:
    """The value with each NUL and lone surrogate (in strings and keys) replaced by U+FFFD.

    JSON allows them, Postgres text and JSONB refuse them. The rest of the event is worth
    keeping, so the character is replaced rather than the event refused. Call it only on
    values whose depth was checked: it recurses.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_UNSTORABLE.sub(REPLACEMENT, key): make_storable(child) for key, child in value.items()}
    if isinstance(value, list):
        return [make_storable(child) for child in value]
    return value


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in a decoded value."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest
