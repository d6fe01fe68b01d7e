"""The console, live: the customer page's stream and the home's
(routes of the console's blueprint, imported by `app/console/__init__.py`).

`GET /console/customers/{id}/live` is the read API's stream (`app/read_api/stream.py`,
`open_stream`) for the signed-in agent's team. `GET /console/live` follows the whole team
for the home's "Active now" list: an SSE `news` event when any customer of the team had
events folded, at most one every `NEWS_SECONDS` (a busy team folds many batches a second;
the list needs one look), fed by the process's one `LISTEN` (`app/read_api/live.py`, a
`TeamSubscription`: no read per notice). Both count as open streams of the process.

For both the session is what must still hold: signed out elsewhere, or the key revoked,
ends the stream with an `end` event and the page goes to sign-in, as a click would. A
refusal is answered as events too (`as_events`): an EventSource gives up for good on any
answer but an event stream, so a reconnection refused (signed out while the stream was
down, the process's streams full, Redis away) would leave the page silently still. The
page's script (`static/console.js`) listens, and fetches again what it shows: the
customer page itself (the new items on top of the journey, the profile with its presence
line), or the home's list (`/console/active-now`). So a page is drawn by the one template
whatever brought the change.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, current_app, g, request, url_for

from app.api_error import ApiError
from app.console import session
from app.console.views import _customer_id, bp
from app.read_api.live import END, Listener, TeamSubscription
from app.read_api.stream import (
    RETRY_MILLISECONDS,
    listener_with_room,
    open_stream,
    resume_position,
)
from app.resources import resources
from store.customers import customer_state

NEWS_SECONDS = 1.0  # the home's list is told of news at most once this long


def _session_holds() -> Callable[[], None]:
    """What a console stream checks at each heartbeat: the request's session still signs in."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    cookie = request.cookies.get(session.SESSION_COOKIE)

    def session_holds() -> None:
        with app.app_context():
            try:
                session.agent_of(cookie)
            except session.SignedOut as out:
                raise ApiError(
                    401, "signed_out", f"The console session ended ({out.reason}); sign in again."
                ) from None
            except session.Unavailable:
                pass  # Redis is away: the stream goes on; the next page load says so

    return session_holds


@bp.get("/customers/<customer_id>/live")
def live(customer_id: str) -> Any:
    """Server-Sent Events: the customer's new feed items, for its open page."""
    wanted = _customer_id(customer_id)
    resume = resume_position()
    session_holds = _session_holds()
    team_id = g.agent.team_id
    with resources().reads.connect(team_id) as connection:
        exists, merged_into = customer_state(connection, team_id, wanted)
        if not exists or merged_into is not None:
            raise ApiError(404, "not_found", "No such customer (or it was merged): reload the page.")
        return open_stream(connection, team_id, wanted, session_holds, resume)


@bp.get("/live")
def home_live() -> Response:
    """Server-Sent Events for the home: `news` when a customer of the team has new events."""
    listener = listener_with_room()
    subscription = listener.subscribe_team(g.agent.team_id)
    body = _news(listener, subscription, _session_holds(), resources().settings.live_heartbeat_seconds)
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _news(
    listener: Listener,
    subscription: TeamSubscription,
    still_allowed: Callable[[], None],
    heartbeat_seconds: float,
) -> Iterator[str]:
    """`news` events, at most one per NEWS_SECONDS; the session checked every heartbeat."""
    checked = time.monotonic()
    told = checked - NEWS_SECONDS
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: open\n\n"
        while True:
            try:
                word = subscription.notices.get(timeout=heartbeat_seconds)
            except queue.Empty:
                word = "quiet"
            now = time.monotonic()
            if word == "quiet" or now - checked >= heartbeat_seconds:
                checked = now
                try:
                    still_allowed()
                except ApiError as error:
                    ended = json.dumps({"message": error.message, "code": error.code})
                    yield f"event: end\ndata: {ended}\n\n"
                    return
                if word == "quiet":
                    yield ": keep-alive\n\n"
                    continue
            if word == END:
                return  # the process is stopping: the page's EventSource reconnects elsewhere
            wait = told + NEWS_SECONDS - now
            if wait > 0:
                time.sleep(wait)  # news meanwhile is the same news: taken below, told once
            if END in _drained(subscription):
                return
            told = time.monotonic()
            yield "event: news\ndata: {}\n\n"
    finally:
        listener.unsubscribe_team(subscription)


def _drained(subscription: TeamSubscription) -> list[str | None]:
    found: list[str | None] = []
    while not subscription.notices.empty():
        found.append(subscription.notices.get_nowait())
    return found


# Come back after this long when a refusal names no Retry-After.
_REFUSED_RETRY_MILLISECONDS = 5_000
_STREAMS = ("console.live", "console.home_live")


@bp.after_request
def as_events(response: Response) -> Response:
    """A page's stream refused (the sign-in check, `open_stream`'s 503, storage away):
    signed out, an `end` event (the page goes to sign-in, as when a stream ends so);
    busy or unavailable, a `retry:` of the Retry-After and the end of the answer, so
    the EventSource comes back then with its Last-Event-ID. The response is changed in
    place: the headers the console sets on every answer stay."""
    if request.endpoint not in _STREAMS or response.status_code not in (401, 429, 503):
        return response
    if response.status_code == 401:
        # The session is over on the server already (`require_agent`): the page cannot
        # learn why by loading itself, so the end says where to go (the reason with it).
        ended = json.dumps(
            {
                "message": "The console session ended; sign in again.",
                "code": "signed_out",
                "sign_in": response.headers.get("X-Console-Sign-In") or url_for("console.sign_in"),
            }
        )
        body = f"retry: {RETRY_MILLISECONDS}\nevent: end\ndata: {ended}\n\n"
    else:
        seconds = response.headers.get("Retry-After", "")
        wait = max(int(seconds), 1) * 1000 if seconds.isdigit() else _REFUSED_RETRY_MILLISECONDS
        body = f"retry: {wait}\n: {response.status_code}, come back then\n\n"
    response.set_data(body)
    response.status_code = 200
    response.mimetype = "text/event-stream"
    return response
