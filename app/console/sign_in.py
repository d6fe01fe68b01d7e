"""The console's sign-in and sign-out (routes of the console's blueprint, imported by
`app/console/__init__.py`): a read key in, a session out (`session.py`), refusals said
plainly and throttled (`throttle.py`)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response, g, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from app.console import data, session, throttle
from app.console.views import BadRequest, bp
from app.resources import resources

# What the sign-in page says when it was reached because a session ended.
SIGNED_OUT_REASONS = {
    "revoked": "You were signed out: your key was revoked. Ask your team admin for a new read key.",
    "expired": "You were signed out: your key has expired. Sign in with a current read key.",
    "rotated": "You were signed out: your key was rotated. Sign in with its replacement.",
    "scope": "You were signed out: your key no longer has the read scope.",
    "unknown": "You were signed out: your key no longer exists.",
    "invalid": "Your session was not valid any more. Sign in again.",
    "ended": "Your session has ended (it was signed out, perhaps in another tab). Sign in again.",
    "signed_out": "You signed out.",
}
# What the sign-in form says about a key typed into it.
KEY_PROBLEMS = {
    "unknown": "That key is not recognised. Paste the whole key (it starts with tlk_), "
    "or ask your team admin for a read key.",
    "revoked": "That key was revoked. Ask your team admin for a new read key.",
    "expired": "That key has expired. Ask your team admin for a current read key.",
    "rotated": "That key was rotated and only works for ingest now; sign in with its replacement.",
    "scope": "That key has no read scope, so it cannot open the console. Use a key with the read scope.",
}


def _safe_next(target: str | None) -> str | None:
    """A place to go back to after sign-in: a path of the console only (never another host)."""
    if not target or not target.startswith("/console") or target.startswith("//") or "\\" in target:
        return None
    if any(ch in target for ch in "\r\n\x00") or len(target) > 2000:
        return None
    return target


# -- sign-in -------------------------------------------------------------------------


def _sign_in_page(*, problem: str | None = None, status: int = 200) -> Response:
    response = make_response()
    token = session.sign_in_token(request, response)
    reason = request.args.get("reason", "")
    response.set_data(
        render_template(
            "console/sign_in.html",
            csrf=token,
            problem=problem,
            notice=SIGNED_OUT_REASONS.get(reason),
            next=_safe_next(request.values.get("next")) or "",
        )
    )
    response.status_code = status
    return response


@bp.get("/sign-in")
def sign_in() -> Response:
    return _sign_in_page()


@bp.post("/sign-in")
def sign_in_submit() -> BaseResponse:
    if not session.sign_in_token_matches(request):
        return _sign_in_page(
            problem="The sign-in form had expired or came from another site. Try again.", status=400
        )
    secret = request.form.get("key", "").strip()
    if not secret:
        return _sign_in_page(problem="Paste your read key into the box.", status=400)
    address = request.remote_addr or "unknown"
    throttled = throttle.check(address, secret)
    if throttled is not None:
        refused = _sign_in_page(
            problem="Too many sign-in attempts failed from here or with this key. "
            f"Wait {max(1, throttled.retry_after // 60)} minute(s), then try again with your read key.",
            status=429,
        )
        refused.headers["Retry-After"] = str(throttled.retry_after)
        return refused
    key = None
    if len(secret) <= 200 and "\x00" not in secret:
        found = resources().keys.lookup(secret)
        if found is not None:
            with resources().engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                key = data.find_key(connection, found.team_id, found.key_id)
    reason = session.why_unusable(key, datetime.now(UTC))
    if reason is not None or key is None:
        throttle.record_failure(address, secret, reason or "unknown")
        return _sign_in_page(problem=KEY_PROBLEMS[reason or "unknown"], status=401)
    response = redirect(_safe_next(request.form.get("next")) or url_for("console.home"), 303)
    session.start_session(response, key)
    return response


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    if not session.csrf_matches(g.agent):
        raise BadRequest("The sign-out form had expired or came from another site. Reload and try again.")
    response = redirect(url_for("console.sign_in", reason="signed_out"), 303)
    session.end_session(response, g.agent)
    return response
