"""The console's pages: sign-in, search, a customer's journey, deep links, groups (SPEC §10).

Every page but sign-in needs a signed-in agent (`app/console/session.py`), whose key
is checked again on every request. The data comes through `app/console/data.py`, the
same store functions and single statements the read API runs, inside one team.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from marshmallow import ValidationError
from werkzeug.wrappers import Response as BaseResponse

from app.console import chart, data, present, session
from app.resources import resources
from schemas.api import FEED_TYPES, CustomerSearchArgs, FeedArgs, GroupArgs, query_arguments
from schemas.fields import Instant

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

PAGE_SIZE = 50
# A deep link's `at=` shows what the customer did in this long before it.
BEFORE_AT = timedelta(minutes=30)
VISITS_SHOWN = 5  # the newest visits on a customer's page; the API pages through them all
# Events read for them at most (about), in statements of VISITS_CHUNK: five visits of
# an ordinary journey take one statement, and a longer visit is shown as "over" its part
# read (the API's /visits pages through it all).
VISITS_SCAN = 300
VISITS_CHUNK = 100
SEARCH_PAGE_SIZE = 25
ACTIVE_SHOWN = 50  # customers the home lists as active now; "and N more" beyond
_CUSTOMER_ID = re.compile(r"[0-9]{1,18}")
_LOOKUP_KINDS = {
    "email": ("email", "email"),
    "user_id": ("user", "userId"),
    "anonymous_id": ("anonymous", "anonymousId"),
}
_OPEN = {"console.sign_in", "console.sign_in_submit", "console.static", "console.front_door", "console.bare"}
OPENAPI_PATH = "/api/v1/openapi.json"
_at_field = Instant()
_search_args = CustomerSearchArgs()
_feed_args = FeedArgs()
_group_args = GroupArgs()


class BadRequest(Exception):
    """A console URL that cannot be answered as given; shown as a 400 page saying why."""


def group_url(group_id: str, **query: str) -> str:
    """A group's page: its id as one path segment, every `/` and `.` in it percent-encoded,
    so no groupId (`../../api/v1/keys`) can make the link leave /console. An id that is
    all dots (`.`, `..`) is a dot-segment to a browser even encoded (WHATWG URL: `%2e%2e`
    is `..`), so those two go in the query string instead."""
    base = url_for("console.home") + "groups/"
    if group_id in (".", ".."):
        query = {"id": group_id, **query}
    else:
        base += quote(group_id, safe="").replace(".", "%2E")
    return base + ("?" + urlencode(query) if query else "")


def _here() -> str:
    return request.full_path.rstrip("?") if request.query_string else request.path


@bp.before_request
def require_agent() -> BaseResponse | None:
    """Sign-in for pages that need it; a session whose key stopped being good is ended."""
    g.console_started = time.perf_counter()
    if request.endpoint in _OPEN:
        return None
    try:
        agent = session.current_agent(request)
    except session.Unavailable:
        return _unavailable()
    except session.SignedOut as out:
        response = _to_sign_in(reason=out.reason)
        session.end_session(response)
        return response
    if agent is None:
        if (
            request.method == "GET"
            and request.headers.get("Sec-Fetch-Site") == "cross-site"
            and request.headers.get("Sec-Fetch-Mode") == "navigate"
        ):
            # A link from another site (a ticketing tool): SameSite=Strict keeps the session
            # cookie off this request. Our page reloads itself, now same-site, with it.
            return make_response(render_template("console/bounce.html"), 200)
        return _to_sign_in()
    g.agent = agent
    return None


def _to_sign_in(reason: str | None = None) -> BaseResponse:
    if request.endpoint in ("console.timeline", "console.live", "console.active_now", "console.home_live"):
        # fetch() from our script: it sends the agent to sign-in itself.
        response = make_response("Signed out", 401)
        response.headers["X-Console-Sign-In"] = url_for("console.sign_in", reason=reason)
        return response
    args: dict[str, Any] = {}
    if reason:
        args["reason"] = reason
    if request.method == "GET" and request.endpoint not in ("console.home", None):
        args["next"] = _here()
    return redirect(url_for("console.sign_in", **args), 303)


@bp.after_request
def security_headers(response: Response) -> Response:
    """A strict CSP (our own files only, no inline script), and nothing kept or leaked."""
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # Console URLs hold emails and ids: never sent on to the sites an event links to.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
        started = g.get("console_started")
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}"
    return response


@bp.errorhandler(BadRequest)
def bad_request(error: BadRequest) -> tuple[str, int]:
    return render_template("console/message.html", title="Cannot show this", message=str(error)), 400


def _unavailable() -> BaseResponse:
    page = render_template(
        "console/message.html",
        title="The console is unavailable",
        message="Sessions cannot be checked right now (Redis does not answer). Try again in a minute.",
    )
    response = make_response(page, 503)
    response.headers["Retry-After"] = "30"
    return response


@bp.errorhandler(session.Unavailable)
def unavailable(error: session.Unavailable) -> BaseResponse:
    return _unavailable()


# -- the front door ------------------------------------------------------------------


def front_door() -> BaseResponse:
    """`/`: people go to the console; the answer also names the API's OpenAPI document."""
    response = redirect(url_for("console.home"), 302)
    response.headers["Link"] = f'<{OPENAPI_PATH}>; rel="service-desc"'
    response.set_data(
        f"The console for agents is at /console/. The API is described at {OPENAPI_PATH} (OpenAPI 3).\n"
    )
    response.mimetype = "text/plain"
    return response


@bp.get("")
def bare() -> BaseResponse:
    """`/console` without its slash: to `/console/` by a path (never a URL built from `Host`)."""
    return redirect(url_for("console.home"), 308)


# -- search --------------------------------------------------------------------------


@bp.get("/")
def home() -> str:
    """Search by email, name, userId or anonymousId (prefix); every customer when empty."""
    raw = {name: request.args.get(name) for name in ("q", "cursor") if request.args.get(name)}
    raw["limit"] = str(SEARCH_PAGE_SIZE)
    try:
        args = _search_args.load(raw)
    except ValidationError as error:
        raise BadRequest(_problem(error)) from None
    query = args["q"].strip()
    cursor = args.get("cursor")
    with resources().reads.connect(g.agent.team_id) as connection:
        customers, position = data.search_customers(
            connection,
            g.agent.team_id,
            query,
            limit=SEARCH_PAGE_SIZE,
            after=cursor.position if cursor else None,
        )
    more = None
    if position is not None:
        more = url_for(
            "console.home", q=query or None, cursor=data.encode_cursor("customers", position, "desc")
        )
    # The home itself (no search, first page) opens on who is active now, kept live.
    active = _active_now() if not query and cursor is None else None
    return render_template(
        "console/search.html", q=query, customers=customers, more=more, paged=bool(cursor), active=active
    )


@bp.get("/active-now")
def active_now() -> str:
    """The home's "Active now" list alone: what its script fetches when the team has news."""
    return render_template("console/active_now.html", active=_active_now())


def _active_now() -> dict[str, Any]:
    """The team's customers active now (an event within ACTIVE_WITHIN), newest first, at
    most ACTIVE_SHOWN; how many more there are."""
    now = datetime.now(UTC)
    with resources().reads.connect(g.agent.team_id) as connection:
        customers, count = data.active_customers(connection, g.agent.team_id, now, limit=ACTIVE_SHOWN)
    rows = [present.active_customer(customer, now) for customer in customers]
    return {
        "rows": rows,
        "more": count - len(rows),
        "more_capped": count >= data.ACTIVE_COUNTED,
        "within": int(present.ACTIVE_WITHIN.total_seconds() // 60),
    }


def _problem(error: ValidationError) -> str:
    messages = error.messages if isinstance(error.messages, dict) else {"query": error.messages}
    parts = []
    for name, problem in messages.items():
        text = " ".join(str(p) for p in problem) if isinstance(problem, list) else str(problem)
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


# -- a customer ----------------------------------------------------------------------


def _feed_query() -> tuple[data.FeedFilter, Any, dict[str, Any]]:
    """The filters and cursor of a customer page's query string, checked as the API checks them."""
    types = [kind for kind in request.args.getlist("type") if kind]
    events = [name.strip() for name in request.args.getlist("event") if name.strip()]
    raw: dict[str, Any] = {"type": types, "event": events}
    for name in ("cursor", "since", "until"):
        if request.args.get(name):
            raw[name] = request.args[name]
    try:
        args = _feed_args.load(query_arguments(_feed_args, _MultiDict(raw)))
    except ValidationError as error:
        raise BadRequest(
            f"This link's filters or 'older' position are not valid ({_problem(error)}). "
            "Open the customer again from the newest events."
        ) from None
    cursor = args.get("cursor")
    filters = data.FeedFilter(
        types=tuple(args.get("type", ())),
        events=tuple(args.get("event", ())),
        since=args.get("since"),
        until=args.get("until"),
    )
    window = {name: request.args[name] for name in ("since", "until") if args.get(name) is not None}
    return filters, cursor.position if cursor else None, {"type": types, "event": events, **window}


class _MultiDict(dict[str, Any]):
    def getlist(self, name: str) -> list[Any]:
        value = self.get(name, [])
        return value if isinstance(value, list) else [value]


def _customer_id(raw: str) -> int:
    if not _CUSTOMER_ID.fullmatch(raw):
        abort(404)
    return int(raw)


def _not_found(what: str, looked_up: str | None = None) -> tuple[str, int]:
    return (
        render_template("console/not_found.html", what=what, looked_up=looked_up),
        404,
    )


@bp.get("/customers/<customer_id>")
def customer(customer_id: str) -> Any:
    """A customer's profile and journey, newest first; `cursor` starts at an older page."""
    wanted = _customer_id(customer_id)
    filters, after, chosen = _feed_query()
    now = datetime.now(UTC)
    days = chart.day_bounds(now)
    # As the API reads them: each read chooses its own snapshot (store/snapshot.py).
    with resources().reads.connect(g.agent.team_id) as connection:
        merged_into, profile = data.load_profile(connection, g.agent.team_id, wanted)
        timeline = None
        visits: list[dict[str, Any]] = []
        activity = None
        if profile is not None:
            timeline = data.load_timeline(
                connection, g.agent.team_id, wanted, filters=filters, after=after, limit=PAGE_SIZE
            )
            visits, _ = data.read_visits(
                connection,
                g.agent.team_id,
                wanted,
                limit=VISITS_SHOWN,
                after=None,
                budget=VISITS_SCAN,
                chunk=VISITS_CHUNK,
            )
            activity = data.read_activity(connection, g.agent.team_id, wanted, days)
    if merged_into is not None:
        return redirect(_customer_url("console.customer", merged_into, request.args), 303)
    if profile is None or timeline is None or activity is None:
        return _not_found("customer", f"customer {customer_id}")
    return render_template(
        "console/customer.html",
        activity=chart.render(days, activity, chart.visit_marks(visits, now)),
        presence=present.presence(profile.data["presence"], now),
        profile=profile.data,
        visits=visits,
        trait_times=profile.trait_times,
        items=timeline.items,
        older=_older_url(wanted, timeline.next_cursor, chosen),
        chosen=chosen,
        window=(filters.since, filters.until) if filters.since or filters.until else None,
        feed_types=FEED_TYPES,
        paged=after is not None,
    )


@bp.get("/customers/<customer_id>/timeline")
def timeline(customer_id: str) -> Any:
    """The next older page of the timeline as HTML items, for the page's "Older" button."""
    wanted = _customer_id(customer_id)
    filters, after, chosen = _feed_query()
    with resources().reads.connect(g.agent.team_id) as connection:
        found = data.load_timeline(
            connection, g.agent.team_id, wanted, filters=filters, after=after, limit=PAGE_SIZE
        )
    if found is None:
        abort(404)
    if found.merged_into is not None:
        return redirect(_customer_url("console.timeline", found.merged_into, request.args), 307)
    return render_template(
        "console/timeline_page.html",
        items=found.items,
        older=_older_url(wanted, found.next_cursor, chosen),
    )


def _customer_url(endpoint: str, customer_id: int, args: Any) -> str:
    url = url_for(endpoint, customer_id=str(customer_id))
    return url + ("?" + urlencode(list(args.items(multi=True))) if args else "")


def _older_url(customer_id: int, cursor: str | None, chosen: dict[str, Any]) -> str | None:
    if cursor is None:
        return None
    query = [("type", kind) for kind in chosen["type"]] + [("event", name) for name in chosen["event"]]
    query += [(name, chosen[name]) for name in ("since", "until") if name in chosen]
    query.append(("cursor", cursor))
    return url_for("console.customer", customer_id=str(customer_id)) + "?" + urlencode(query)


# -- deep links ----------------------------------------------------------------------


@bp.get("/lookup")
def lookup() -> Any:
    """`?email=`, `?user_id=` or `?anonymous_id=`: that customer's page (the survivor of a merge)."""
    given = [(name, value) for name, value in request.args.items(multi=True) if name in _LOOKUP_KINDS]
    unknown = sorted(set(request.args) - set(_LOOKUP_KINDS) - {"at"})
    if len(given) != 1 or unknown or not given[0][1].strip():
        raise BadRequest(
            "A lookup link needs exactly one of email=, user_id= or anonymous_id=, for example "
            "/console/lookup?email=jane%40example.com"
            + (f" (it had {', '.join(unknown)})" if unknown else "")
        )
    name, value = given[0]
    kind, label = _LOOKUP_KINDS[name]
    value = value.strip() if kind == "email" else value
    if len(value) > 320 or "\x00" in value:
        return _not_found("customer", f"{label} {value[:320]}")
    with resources().reads.connect(g.agent.team_id) as connection:
        customer_id = data.lookup_customer(connection, g.agent.team_id, kind, value)
    if customer_id is None:
        return _not_found("customer", f"{label} {value}")
    window = _before(request.args.get("at"))
    url = url_for("console.customer", customer_id=str(customer_id))
    return redirect(url + ("?" + urlencode(window) if window else ""), 303)


def _before(at: str | None) -> dict[str, str]:
    """`at=` of a deep link (when the customer wrote to us): the window of what they did in
    the BEFORE_AT minutes up to it, as the customer page's since/until."""
    if not at:
        return {}
    try:
        instant = _at_field.deserialize(at)
    except ValidationError:
        raise BadRequest(
            f"at= must be an ISO-8601 instant, for example 2024-03-01T12:00:00Z (it was {at[:60]!r})."
        ) from None
    return {"since": present.iso(instant - BEFORE_AT), "until": present.iso(instant + timedelta(seconds=1))}


# -- groups --------------------------------------------------------------------------


@bp.get("/groups/", merge_slashes=False)
def group_by_query() -> Any:
    """`/console/groups/?id=..`: the group whose id a path segment cannot carry (see `group_url`)."""
    group_id = request.args.get("id")
    if group_id is None:
        abort(404)
    return group(group_id)


# merge_slashes=False: an id holding `//` is found as it is, never redirected (Werkzeug's
# redirect would name the request's Host).
@bp.get("/groups/<path:group_id>", merge_slashes=False)
def group(group_id: str) -> Any:
    """A group's traits and its members, in the order they joined."""
    raw = {"limit": str(SEARCH_PAGE_SIZE)}
    if request.args.get("cursor"):
        raw["cursor"] = request.args["cursor"]
    try:
        args = _group_args.load(raw)
    except ValidationError as error:
        raise BadRequest(_problem(error)) from None
    if "\x00" in group_id or len(group_id) > 255:
        return _not_found("group", f"group {group_id[:255]}")
    cursor = args.get("cursor")
    with resources().reads.connect(g.agent.team_id) as connection:
        found = data.load_group(
            connection,
            g.agent.team_id,
            group_id,
            limit=SEARCH_PAGE_SIZE,
            after=cursor.position if cursor else None,
        )
    if found is None:
        return _not_found("group", f"group {group_id}")
    group_data, position = found
    more = None
    if position is not None:
        more = group_url(group_id, cursor=data.encode_cursor("members", position, "asc"))
    return render_template("console/group.html", group=group_data, more=more)


@bp.errorhandler(404)
def page_not_found(error: Exception) -> tuple[str, int]:
    return _not_found("page")
