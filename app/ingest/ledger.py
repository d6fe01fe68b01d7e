"""HTTP ingest's half of the team's debugger: refusals and counts, off the request path.

Ingest keeps a `RequestNotes` per request and calls five functions (see
docs/ingest-debugger.md for the exact hook): `begin` once the key is known,
`event_refused` per refused event, `events_stored` after the commit, `events_expired`
for the events older than the team's retention (answered 200, not stored), and
`request_refused` when the whole request is answered with an error. They only add to
this process's memory: an accepted request pays no statement at all, and neither does a
refused one. A daemon
thread (started on first use in a process, so after gunicorn's fork: a forked child
starts its own, `service.per_process`) writes what gathered at most every
`FLUSH_INTERVAL_SECONDS` with `store.rejections.record_rejections`, one transaction per
team, and once more when the process exits.

Bounded: per team, at most `MAX_PENDING_PER_TEAM` refusals wait in memory (the latest;
the others are only counted), and the counters are keyed by (team, hour, type, outcome,
code), a bounded set. These are diagnostics, not events: a process killed between two
flushes loses at most that second of them; a failed flush (Postgres down) is retried
once on the next round, then dropped, so memory stays bounded.

Under the app's TESTING the flush happens inline at the end of each request, so a test
that posts and then reads the debugger finds it written.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import Engine

from app.errors import ApiError
from schemas.rejections import bounded_message, message_id_of, preview_of, preview_of_text, type_label
from schemas.segment import EventRejected, PreparedEvent
from service.per_process import PerProcess, start_daemon
from store.apikeys import AuthenticatedKey
from store.events import StoreResult
from store.rejections import MAX_PER_CALL, CountKey, Refusal, hour_of, record_rejections

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 1.0
MAX_PENDING_PER_TEAM = MAX_PER_CALL
_PREVIEW_BYTES = 8 * 1024  # of a refused body, inflated at most this far for its preview
# Not the content's fault, or no team to tell: not kept.
_NOT_RECORDED = frozenset(("missing_key", "invalid_key", "storage_unavailable", "internal_error"))


@dataclass
class _TeamPending:
    refusals: deque[Refusal] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_PER_TEAM))
    counts: dict[CountKey, int] = field(default_factory=dict)
    retried: bool = False


@dataclass
class _Here:
    """A ledger's state in one process: what waits to be written, and its thread's signal."""

    inline: bool
    pending: dict[int, _TeamPending] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)


class IngestLedger:
    """This process's pending refusals and counts, flushed by one daemon thread."""

    def __init__(self, engine: Engine, inline: bool):
        self.engine = engine
        self.inline = inline
        self._here = PerProcess(self._start, at_exit=self._flush)

    @property
    def pending(self) -> dict[int, _TeamPending]:
        """What waits to be written in this process (for tests and diagnostics)."""
        here = self._here.made()
        return {} if here is None else here.pending

    def add(self, team_id: int, refusal: Refusal | None, key: CountKey, n: int = 1) -> None:
        here = self._here.get()
        with here.lock:
            pending = here.pending.get(team_id)
            if pending is None:
                pending = here.pending[team_id] = _TeamPending()
            if refusal is not None:
                pending.refusals.append(refusal)
            pending.counts[key] = pending.counts.get(key, 0) + n
        if not here.inline and not here.wake.is_set():  # set: a flush is coming anyway
            here.wake.set()

    def flush(self) -> None:
        """Write everything pending (one transaction per team)."""
        here = self._here.made()
        if here is not None:
            self._flush(here)

    def _flush(self, here: _Here) -> None:
        with here.lock:
            taken, here.pending = here.pending, {}
        now = datetime.now(UTC)
        for team_id, pending in taken.items():
            try:
                with self.engine.begin() as connection:
                    record_rejections(connection, team_id, list(pending.refusals), pending.counts, now)
            except Exception as error:  # Postgres down: keep it for one more round, then drop
                log.warning("ingest debugger: cannot record for team %s: %s", team_id, type(error).__name__)
                if not pending.retried:
                    pending.retried = True
                    self._put_back(here, team_id, pending)

    def _put_back(self, here: _Here, team_id: int, pending: _TeamPending) -> None:
        with here.lock:
            newer = here.pending.get(team_id)
            if newer is not None:  # merge: newer refusals last, the deque keeps the latest
                for refusal in newer.refusals:
                    pending.refusals.append(refusal)
                for key, n in newer.counts.items():
                    pending.counts[key] = pending.counts.get(key, 0) + n
            here.pending[team_id] = pending

    def _start(self) -> _Here:
        """This process's state, and its thread unless inline (on first use in the process)."""
        here = _Here(self.inline)
        if not self.inline:
            start_daemon(lambda: self._run(here), "ingest-ledger")
        return here

    def _run(self, here: _Here) -> None:
        while True:
            here.wake.wait()
            here.wake.clear()
            threading.Event().wait(FLUSH_INTERVAL_SECONDS)  # gather a second's worth
            try:
                self._flush(here)
            except Exception:  # never let the thread die
                log.exception("ingest debugger: flush failed")


@dataclass
class RequestNotes:
    """What the debugger knows of one ingest request: its route, then its team and body."""

    route: str
    team_id: int | None = None
    raw: bytes = b""
    events_refused: bool = False
    turn: int = 0  # the team whose ingest turn this request holds (app/ingest/ratelimit.py `TeamTurns`)


def init_app(app: Flask, engine: Engine) -> IngestLedger:
    """The app's ledger (TESTING: flushed inline, at the end of each request)."""
    ledger = app.extensions["ingest_ledger"] = IngestLedger(engine, inline=bool(app.config.get("TESTING")))
    return ledger


def begin(notes: RequestNotes, key: AuthenticatedKey | None, raw: bytes) -> None:
    """The request's team is known (memory only): later refusals are the team's."""
    if key is not None:
        notes.team_id = key.team_id
        notes.raw = raw


def event_refused(ledger: IngestLedger, notes: RequestNotes, item: Any, error: EventRejected) -> None:
    """One event of the request was refused (it may still be answered 200 in a batch)."""
    if notes.team_id is None:
        return
    notes.events_refused = True
    kind, message_id = type_label(item), message_id_of(item)
    _keep(ledger, notes, error, kind=kind, message_id=message_id, preview=preview_of(item))


def events_stored(
    ledger: IngestLedger, notes: RequestNotes, prepared: Sequence[PreparedEvent], result: StoreResult
) -> None:
    """The committed events, counted as accepted or duplicate per type (memory only).

    StoreResult says how many were new, not which: when a batch of several types has
    both, its split per type is unknown, and the counts go under type `mixed`.
    """
    team_id = notes.team_id
    if team_id is None or not prepared:
        return
    hour = hour_of(datetime.now(UTC))
    types = {event.type for event in prepared}
    if result.duplicates == 0 or result.accepted == 0 or len(types) == 1:
        outcome = "accepted" if result.duplicates == 0 else "duplicate"
        if result.accepted and result.duplicates:  # one type, both outcomes
            kind = prepared[0].type
            ledger.add(team_id, None, CountKey(hour, "http", kind, "accepted"), result.accepted)
            ledger.add(team_id, None, CountKey(hour, "http", kind, "duplicate"), result.duplicates)
        else:
            for kind in types:
                n = sum(1 for event in prepared if event.type == kind)
                ledger.add(team_id, None, CountKey(hour, "http", kind, outcome), n)
    else:
        ledger.add(team_id, None, CountKey(hour, "http", "mixed", "accepted"), result.accepted)
        ledger.add(team_id, None, CountKey(hour, "http", "mixed", "duplicate"), result.duplicates)
    if ledger.inline:
        ledger.flush()


def events_expired(ledger: IngestLedger, notes: RequestNotes, expired: Sequence[PreparedEvent]) -> None:
    """Events answered 200 but not stored, older than the team's retention (memory only)."""
    team_id = notes.team_id
    if team_id is None or not expired:
        return
    hour = hour_of(datetime.now(UTC))
    for kind in sorted({event.type for event in expired}):
        n = sum(1 for event in expired if event.type == kind)
        ledger.add(team_id, None, CountKey(hour, "http", kind, "expired"), n)
    if ledger.inline:
        ledger.flush()


def request_refused(ledger: IngestLedger, notes: RequestNotes, error: ApiError) -> None:
    """The whole request was answered with an error: keep it, unless its events were."""
    if notes.team_id is None or error.code in _NOT_RECORDED:
        return
    if not notes.events_refused:
        _keep(ledger, notes, error, kind="request", message_id=None, preview=_body_preview(notes.raw))
    if ledger.inline:
        ledger.flush()


def _keep(
    ledger: IngestLedger,
    notes: RequestNotes,
    error: ApiError | EventRejected,
    *,
    kind: str,
    message_id: str | None,
    preview: str,
) -> None:
    """One refusal of the request's team, kept and counted under `kind` (an event type,
    `other`, or `request` for a refused request as a whole)."""
    assert notes.team_id is not None
    now = datetime.now(UTC)
    refusal = Refusal(
        at=now,
        source="http",
        route=notes.route,
        status=error.status,
        code=error.code,
        message=bounded_message(error.message),
        message_id=message_id,
        type=None if kind in ("other", "request") else kind,
        preview=preview,
    )
    ledger.add(notes.team_id, refusal, CountKey(hour_of(now), "http", kind, "refused", error.code))


def _body_preview(raw: bytes) -> str:
    """A refused body's preview: the text as sent (inflated a little if gzipped), key-free."""
    data = raw[:_PREVIEW_BYTES]
    if raw[:2] == b"\x1f\x8b":
        try:
            data = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(raw, _PREVIEW_BYTES)
        except zlib.error:
            return "(gzip data that does not inflate)"
    return preview_of_text(data.decode("utf-8", "replace"))
