"""`GET /api/v1/customers/{id}/visits`: a customer's journey in visits, newest first (issue 24).

A visit is a run of the customer's events with no gap of 30 minutes or more between one
and the next (as analytics tools count sessions), on every device. Each says when it
started, how long it lasted, how many events and pages (page and screen calls) it held,
the page it entered on, the referrer and campaign it came with (`context.page.referrer`,
`context.campaign`, of its first event that has them) and the browser, system and
device of its first event with a `context.userAgent`, parsed by `ua-parser` (uap-core's
maintained rules, not a regular expression of ours).

Read newest first by the feed's own keyset (`event_time, tiebreak, id` on the
`(team_id, customer_id, ...)` index), in chunks, until a page of visits is complete; the
cursor is the keyset of the oldest event of the page's last visit, so paging neither
repeats nor skips an event whatever arrives meanwhile (a new event joins the newest
visit, or starts one, above the cursor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from flask import Blueprint, Flask, Response, jsonify
from marshmallow import RAISE, Schema, fields
from sqlalchemy import Connection, text
from ua_parser import parse as parse_user_agent

from app.read_api.customer_ref import read_live
from schemas.api import VISIT_GAP
from schemas.cursors import CursorArgument, FeedPosition, encode_cursor
from schemas.fields import limit_field

bp = Blueprint("visits", __name__, url_prefix="/api/v1")

CHUNK = 1000  # events read per statement
SCAN_BUDGET = 10_000  # events read per request, at most about (see read_visits)


def _string(path: str) -> str:
    return f"CASE WHEN jsonb_typeof({path}) = 'string' THEN {path} #>> '{{}}' END"


def _page(key: str) -> str:
    """context.page's `key`, else, for a page call, its properties' (as the feed reads it)."""
    in_context = _string(f"(raw -> 'context' -> 'page' -> '{key}')")
    in_properties = _string(f"(raw -> 'properties' -> '{key}')")
    return f"COALESCE({in_context}, CASE WHEN type = 'page' THEN {in_properties} END)"


_ROWS = f"""
    SELECT event_time, tiebreak, id, type,
           {_string("(raw -> 'name')")} AS name,
           {_page("url")} AS url, {_page("title")} AS title, {_page("path")} AS path,
           {_page("referrer")} AS referrer,
           CASE WHEN jsonb_typeof(raw -> 'context' -> 'campaign') = 'object'
                THEN raw -> 'context' -> 'campaign' END AS campaign,
           {_string("(raw -> 'context' -> 'userAgent')")} AS user_agent
    FROM events
    WHERE team_id = :team AND customer_id = :customer /*after*/
    ORDER BY event_time DESC, tiebreak DESC, id DESC
    LIMIT :chunk
"""
_AFTER = "AND (event_time, tiebreak, id) < (:after_time, :after_tiebreak, :after_id)"


@lru_cache(maxsize=4096)
def device_of(user_agent: str) -> dict[str, str | None]:
    """Browser, operating system and device of a userAgent, with versions where known."""
    found = parse_user_agent(user_agent[:2000])

    def named(part: Any) -> str | None:
        if part is None or not part.family or part.family == "Other":
            return None
        return f"{part.family} {part.major}" if getattr(part, "major", None) else str(part.family)

    device = found.device.family if found.device and found.device.family != "Other" else None
    return {"browser": named(found.user_agent), "os": named(found.os), "device": device}


@dataclass
class _Visit:
    """A visit while it is read, newest event first: each older row moves its start back."""

    end: datetime
    start: datetime
    events: int = 0
    pages: int = 0
    entry: dict[str, Any] | None = None
    referrer: str | None = None
    campaign: dict[str, Any] | None = None
    user_agent: str | None = None
    oldest: FeedPosition | None = None
    continued: bool = False  # its newer part was on the previous page
    continues: bool = False  # its older part is on the next page

    def add(self, row: Any) -> None:
        self.start = row.event_time
        self.events += 1
        self.oldest = FeedPosition(row.event_time, row.tiebreak, row.id)
        # Older rows overwrite: what the visit came with is what its first event said.
        if row.type in ("page", "screen"):
            self.pages += 1
            self.entry = {
                "type": row.type,
                "name": row.name,
                "url": row.url,
                "title": row.title,
                "path": row.path,
            }
        if row.referrer:
            self.referrer = row.referrer
        if row.campaign:
            self.campaign = row.campaign
        if row.user_agent:
            self.user_agent = row.user_agent

    def answer(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "duration_seconds": int((self.end - self.start).total_seconds()),
            "events": self.events,
            "pages": self.pages,
            "entry_page": self.entry,
            "referrer": self.referrer,
            "campaign": self.campaign,
            "user_agent": self.user_agent,
            "device": device_of(self.user_agent) if self.user_agent else None,
            "continued_from_previous_page": self.continued,
            "continues_on_next_page": self.continues,
        }


def read_visits(
    connection: Connection,
    team_id: int,
    customer_id: int,
    *,
    limit: int,
    after: FeedPosition | None,
    budget: int = SCAN_BUDGET,
    chunk: int = CHUNK,
) -> tuple[list[dict[str, Any]], FeedPosition | None]:
    """Up to `limit` visits, newest first, from the event after `after`; and the next page's
    position (None at the journey's first visit).

    At most about `budget` events are read: a page whose budget runs out ends with the
    visits it completed; one whose first visit alone is longer ends with that visit's
    newer part, `continues_on_next_page` (it may: the scan stopped inside it or at its
    end), and the next page starts with the older part, if any,
    `continued_from_previous_page`. (A visit of a million events costs a million rows
    however it is answered; this way no request reads more than the budget.)"""
    done: list[_Visit] = []
    current: _Visit | None = None
    position = after
    scanned = 0
    while True:
        statement = _ROWS.replace("/*after*/", _AFTER if position else "")
        params: dict[str, Any] = {"team": team_id, "customer": customer_id, "chunk": chunk}
        if position is not None:
            params.update(
                after_time=position.event_time, after_tiebreak=position.tiebreak, after_id=position.id
            )
        rows = connection.execute(text(statement), params).all()
        for row in rows:
            if current is not None and current.start - row.event_time >= VISIT_GAP:
                done.append(current)
                current = None
                if len(done) == limit:
                    return [visit.answer() for visit in done], done[-1].oldest
            if current is None:
                # A page that starts within 30 minutes of the event before it continues a
                # visit the previous page cut (only a budget cuts one).
                continued = not done and after is not None and after.event_time - row.event_time < VISIT_GAP
                current = _Visit(end=row.event_time, start=row.event_time, continued=continued)
            current.add(row)
        scanned += len(rows)
        if len(rows) < chunk:
            if current is not None:
                done.append(current)
            return [visit.answer() for visit in done], None
        if scanned >= budget:
            if done:
                return [visit.answer() for visit in done], done[-1].oldest
            assert current is not None
            current.continues = True
            return [current.answer()], current.oldest
        last = rows[-1]
        position = FeedPosition(last.event_time, last.tiebreak, last.id)


class VisitsArgs(Schema):
    """`GET /customers/{id}/visits`: paging."""

    class Meta:
        unknown = RAISE

    limit = limit_field(default=20, most=100)
    cursor = CursorArgument("visits", FeedPosition)


class VisitDevice(Schema):
    browser = fields.String(allow_none=True, metadata={"description": "e.g. `Chrome 124`"})
    os = fields.String(allow_none=True, metadata={"description": "e.g. `Mac OS X 10`, `iOS 17`"})
    device = fields.String(allow_none=True, metadata={"description": "e.g. `iPhone`, `Mac`"})


class VisitEntryPage(Schema):
    type = fields.String(metadata={"description": "`page` or `screen`"})
    name = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    title = fields.String(allow_none=True)
    path = fields.String(allow_none=True)


class VisitSchema(Schema):
    start = fields.DateTime(metadata={"description": "Event time of the visit's first event."})
    end = fields.DateTime(metadata={"description": "Event time of its last event."})
    duration_seconds = fields.Integer()
    events = fields.Integer(metadata={"description": "Events in the visit, of every type."})
    pages = fields.Integer(metadata={"description": "Page and screen calls in the visit."})
    entry_page = fields.Nested(
        VisitEntryPage, allow_none=True, metadata={"description": "Its first page or screen."}
    )
    referrer = fields.String(allow_none=True, metadata={"description": "context.page.referrer it came with."})
    campaign = fields.Dict(allow_none=True, metadata={"description": "context.campaign it came with."})
    user_agent = fields.String(allow_none=True)
    device = fields.Nested(
        VisitDevice, allow_none=True, metadata={"description": "From user_agent (ua-parser)."}
    )
    continued_from_previous_page = fields.Boolean(
        metadata={"description": "Its newer part ended the previous page (a visit of over 10,000 events)."}
    )
    continues_on_next_page = fields.Boolean(
        metadata={"description": "Its older part, and its real start, begin the next page."}
    )


class VisitPageSchema(Schema):
    data = fields.List(fields.Nested(VisitSchema))
    next_cursor = fields.String(allow_none=True)


_args = VisitsArgs()
_page_schema = VisitPageSchema()


@bp.get("/customers/<path:customer_id>/visits")
def visits(customer_id: str) -> Response:
    """A customer's visits, newest first.
    ---
    get:
      operationId: getCustomerVisits
      summary: A customer's visits
      description: >
        The customer's journey in visits: runs of events with no gap of 30 minutes or
        more, on every device, newest first. Each has its start and end (event times),
        duration, number of events and of pages (page and screen calls), the page it
        entered on, the referrer and campaign its first event carried
        (`context.page.referrer`, `context.campaign`), and the browser, system and
        device parsed from its first `context.userAgent`. Follow `next_cursor` until it
        is null. A request reads at most about 10,000 events: a longer visit is answered
        in parts, the newer with `continues_on_next_page`, the older (on the next page)
        with `continued_from_previous_page`. An id merged into another customer answers
        308 to the survivor's.
      tags: [customers]
      x-key: read
      parameters:
        - CustomerId
        - in: query
          schema: VisitsArgs
      responses:
        200:
          description: One page of visits.
          content:
            application/json:
              schema: VisitPageSchema
        308: Merged
        400: BadRequest
        404: NotFound
    """

    def answer(connection: Connection, team_id: int, live: int, args: Mapping[str, Any]) -> Response:
        cursor = args.get("cursor")
        found, position = read_visits(
            connection, team_id, live, limit=args["limit"], after=cursor.position if cursor else None
        )
        next_cursor = encode_cursor("visits", position, "desc") if position else None
        return jsonify(_page_schema.dump({"data": found, "next_cursor": next_cursor}))

    return read_live(customer_id, _args, answer)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
