"""The agent's session: a signed cookie naming the API key, re-checked on every request.

The cookie holds the team id, the key id and a CSRF token, signed (itsdangerous, as
Flask's own session is) with a secret derived from that key's stored digest (HMAC,
mixed with `CONSOLE_SECRET` when it is set). So every web process, on every machine,
agrees on the secret with no configuration to share and nothing generated per process;
forging a cookie needs the digest, which only the database holds; and the secret itself
is never in the cookie, nor the key.

Each request reads the key by id (one primary-key row) and refuses the session unless
the key is active and has the `read` scope: a revoked, expired or rotated-out key signs
the agent out at their next request, well within a second. A rotated key in its grace
period keeps only ingest (SPEC §5), so it no longer opens the console.

Forms are protected against CSRF twice over: the cookies are SameSite=Strict, and each
form carries a token that must match the session's (or, for the sign-in form, before
there is a session, a random cookie of its own: a double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, Request, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from app.console import data
from app.resources import resources
from service.settings import Settings

SESSION_COOKIE = "console_session"
SIGN_IN_CSRF_COOKIE = "console_sign_in"
COOKIE_PATH = "/console"
# A session ends after a working day even if the key stays good: sign in again.
MAX_AGE_SECONDS = 12 * 3600
_SALT = "console-session-v1"


@dataclass(frozen=True)
class Agent:
    """A signed-in agent: the key's team and id, and the session's CSRF token."""

    team_id: int
    key_id: int
    key_name: str
    csrf: str


class SignedOut(Exception):
    """The session is gone; `reason` says why, in a word the sign-in page explains."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _serializer(digest: str) -> URLSafeTimedSerializer:
    pepper = str(current_app.config.get("CONSOLE_SECRET") or "")
    secret = hmac.new(pepper.encode(), digest.encode(), hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt=_SALT)


def why_unusable(key: data.ApiKey | None, now: datetime) -> str | None:
    """None when `key` may open the console, else the reason: unknown, revoked, expired, scope."""
    if key is None:
        return "unknown"
    status = data.key_status(key, now)
    if status != data.ACTIVE:
        return {"revoked": "revoked", "expiring": "rotated"}.get(status, "expired")
    if "read" not in key.scopes:
        return "scope"
    return None


def start_session(response: Response, key: data.ApiKey) -> None:
    """Sign the agent in: the session cookie for this key, and the sign-in cookie dropped."""
    token = _serializer(key.digest).dumps({"t": key.team_id, "k": key.id, "c": secrets.token_urlsafe(24)})
    _set_cookie(response, SESSION_COOKIE, f"{key.team_id}.{key.id}.{token}", MAX_AGE_SECONDS)
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path=COOKIE_PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")


def current_agent(req: Request) -> Agent | None:
    """The signed-in agent, None without a session; SignedOut when the session no longer holds."""
    cookie = req.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    team_text, _, rest = cookie.partition(".")
    key_text, _, token = rest.partition(".")
    if not (team_text.isdigit() and key_text.isdigit() and token) or len(team_text + key_text) > 36:
        raise SignedOut("invalid")
    team_id, key_id = int(team_text), int(key_text)
    with resources().engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        key = data.find_key(connection, team_id, key_id)
    reason = why_unusable(key, datetime.now(UTC))
    if reason is not None or key is None:
        raise SignedOut(reason or "unknown")
    try:
        payload = _serializer(key.digest).loads(token, max_age=MAX_AGE_SECONDS)
    except BadSignature:
        raise SignedOut("invalid") from None
    if not isinstance(payload, dict) or payload.get("t") != team_id or payload.get("k") != key_id:
        raise SignedOut("invalid")
    return Agent(team_id=team_id, key_id=key_id, key_name=key.name, csrf=str(payload.get("c")))


def sign_in_token(req: Request, response: Response) -> str:
    """The sign-in form's CSRF token: the one its cookie holds, or a new one set on `response`."""
    token = req.cookies.get(SIGN_IN_CSRF_COOKIE)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    _set_cookie(response, SIGN_IN_CSRF_COOKIE, token, 3600)
    return token


def sign_in_token_matches(req: Request) -> bool:
    cookie = req.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    sent = req.form.get("csrf", "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def csrf_matches(agent: Agent) -> bool:
    """Whether the posted form carries this session's token."""
    return hmac.compare_digest(agent.csrf.encode(), request.form.get("csrf", "").encode())


def _set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=bool(current_app.config.get("CONSOLE_COOKIE_SECURE")),
        httponly=True,
        samesite="Strict",
    )


def configure(app: Flask, settings: Settings) -> None:
    """`CONSOLE_SECRET` (optional pepper) and `CONSOLE_COOKIE_SECURE` (set it behind TLS),
    from the app's Settings unless the app's config names them."""
    app.config.setdefault("CONSOLE_SECRET", settings.console_secret)
    app.config.setdefault("CONSOLE_COOKIE_SECURE", settings.console_cookie_secure)
