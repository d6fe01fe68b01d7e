"""The customer page, live: `GET /console/customers/{id}/live`, the page's stream
(a route of the console's blueprint, imported by `app/console/__init__.py`).

It is the read API's stream (`app/read_api/stream.py`, `open_stream`) for the signed-in
agent's team, with the session as what must still hold: signed out elsewhere, or the
key revoked, ends the stream with an `end` event and the page goes to sign-in, as a
click would. A refusal is answered as events too (`as_events`): an EventSource gives
up for good on any answer but an event stream, so a reconnection refused (signed out
while the stream was down, the process's streams full, Redis away) would leave the page
silently still. The page's script (`static/console.js`) listens, and on new items fetches
the page itself again and puts in what changed: the new items at the top of the
journey, the profile with its presence line. So the page is drawn by the one template
whatever brought the change.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, g, request

from app.api_error import ApiError
from app.console import session
from app.console.views import _customer_id, bp
from app.read_api.stream import RETRY_MILLISECONDS, open_stream, resume_position
from app.resources import resources
from store.customers import customer_state


@bp.get("/customers/<customer_id>/live")
def live(customer_id: str) -> Any:
    """Server-Sent Events: the customer's new feed items, for its open page."""
    wanted = _customer_id(customer_id)
    resume = resume_position()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cookie = request.cookies.get(session.SESSION_COOKIE)
    team_id = g.agent.team_id

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

    with resources().reads.connect(team_id) as connection:
        exists, merged_into = customer_state(connection, team_id, wanted)
        if not exists or merged_into is not None:
            raise ApiError(404, "not_found", "No such customer (or it was merged): reload the page.")
        return open_stream(connection, team_id, wanted, session_holds, resume)


# Come back after this long when a refusal names no Retry-After.
_REFUSED_RETRY_MILLISECONDS = 5_000


@bp.after_request
def as_events(response: Response) -> Response:
    """The page's stream refused (the sign-in check, `open_stream`'s 503, storage away):
    signed out, an `end` event (the page goes to sign-in, as when a stream ends so);
    busy or unavailable, a `retry:` of the Retry-After and the end of the answer, so
    the EventSource comes back then with its Last-Event-ID. The response is changed in
    place: the headers the console sets on every answer stay."""
    if request.endpoint != "console.live" or response.status_code not in (401, 429, 503):
        return response
    if response.status_code == 401:
        ended = json.dumps({"message": "The console session ended; sign in again.", "code": "signed_out"})
        body = f"retry: {RETRY_MILLISECONDS}\nevent: end\ndata: {ended}\n\n"
    else:
        seconds = response.headers.get("Retry-After", "")
        wait = max(int(seconds), 1) * 1000 if seconds.isdigit() else _REFUSED_RETRY_MILLISECONDS
        body = f"retry: {wait}\n: {response.status_code}, come back then\n\n"
    response.set_data(body)
    response.status_code = 200
    response.mimetype = "text/event-stream"
    return response
