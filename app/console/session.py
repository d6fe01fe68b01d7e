"""The agent's session: a signed cookie naming the API key and a session held on the server,
both re-checked on every request.

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

The session is also held on the server, in Redis: the cookie's signed payload carries a
random session id, and `{REDIS_PREFIX}console:session:{sha256(id)}` holds the team and key
for as long as the session may last (12 h, Redis expires it). Every request needs that
entry, and signing out deletes it, so a cookie captured before sign-out opens nothing
after it. Redis rather than a table: an allowlist that fails closed (Redis emptied or
restarted: every agent signs in again; never a revoked session back), expiry without a
sweep, one round trip per page, and no schema change. Redis unreachable: the console
answers 503 and opens no page (ingest does not depend on it).

Forms are protected against CSRF twice over: the cookies are SameSite=Strict, and each
form carries a token that must match the session's (or, for the sign-in form, before
there is a session, a random cookie of its own: a double submit). That cookie is named
`__Host-console_sign_in`: Secure, Path=/, no Domain, so no other host or subdomain (and
no plain-http page of another port) can set or overwrite it. Browsers accept a Secure
cookie over plain http only from a loopback host (`http://127.0.0.1`, `localhost`); a
console served over plain http under another name gets the unprefixed cookie, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, Request, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import RedisError
from werkzeug.wrappers import Response

from app.console import data
from app.resources import resources
from service.settings import Settings

SESSION_COOKIE = "console_session"
SIGN_IN_CSRF_COOKIE = "__Host-console_sign_in"
PLAIN_SIGN_IN_CSRF_COOKIE = "console_sign_in"  # served over plain http to a non-loopback host
COOKIE_PATH = "/console"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
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
    session_id: str


class Unavailable(Exception):
    """The session store (Redis) cannot be reached: no page can be opened or signed into."""


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


def _held_at(session_id: str) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"{current_app.config['CONSOLE_REDIS_PREFIX']}session:{digest}"


def _holder(team_id: int, key_id: int) -> bytes:
    return f"{team_id}.{key_id}".encode()


def start_session(response: Response, key: data.ApiKey) -> None:
    """Sign the agent in: a session held in Redis, its cookie, and the sign-in cookie dropped."""
    session_id = secrets.token_urlsafe(24)
    try:
        resources().redis.set(_held_at(session_id), _holder(key.team_id, key.id), ex=MAX_AGE_SECONDS)
    except RedisError as error:
        raise Unavailable(str(error)) from None
    token = _serializer(key.digest).dumps(
        {"t": key.team_id, "k": key.id, "c": secrets.token_urlsafe(24), "s": session_id}
    )
    _set_cookie(response, SESSION_COOKIE, f"{key.team_id}.{key.id}.{token}", MAX_AGE_SECONDS)
    name, path, secure = _sign_in_cookie()
    response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="Strict")


def end_session(response: Response, agent: Agent | None = None) -> None:
    """Drop the cookie; with the signed-in `agent`, end the session on the server too."""
    if agent is not None:
        try:
            resources().redis.delete(_held_at(agent.session_id))
        except RedisError as error:
            raise Unavailable(str(error)) from None
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")


def current_agent(req: Request) -> Agent | None:
    """The signed-in agent, None without a session; SignedOut when the session no longer holds."""
    return agent_of(req.cookies.get(SESSION_COOKIE))


def agent_of(cookie: str | None) -> Agent | None:
    """The agent a session cookie's value names, as `current_agent` (needs the app's context)."""
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
    session_id = payload.get("s")
    if not isinstance(session_id, str) or not session_id:
        raise SignedOut("invalid")
    try:
        held = resources().redis.get(_held_at(session_id))
    except RedisError as error:
        raise Unavailable(str(error)) from None
    if held != _holder(team_id, key_id):
        raise SignedOut("ended")
    return Agent(
        team_id=team_id, key_id=key_id, key_name=key.name, csrf=str(payload.get("c")), session_id=session_id
    )


def _sign_in_cookie() -> tuple[str, str, bool]:
    """The sign-in cookie's (name, path, Secure): `__Host-` unless the browser would refuse it
    (plain http to a host that is not loopback, without CONSOLE_COOKIE_SECURE)."""
    host = request.host
    hostname = host if host.endswith("]") else host.rsplit(":", 1)[0]
    if request.is_secure or current_app.config.get("CONSOLE_COOKIE_SECURE") or hostname in LOOPBACK_HOSTS:
        return SIGN_IN_CSRF_COOKIE, "/", True
    return PLAIN_SIGN_IN_CSRF_COOKIE, COOKIE_PATH, False


def sign_in_token(req: Request, response: Response) -> str:
    """The sign-in form's CSRF token: the one its cookie holds, or a new one set on `response`."""
    name, path, secure = _sign_in_cookie()
    token = req.cookies.get(name)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    # No Domain: a `__Host-` cookie must be host-only.
    response.set_cookie(name, token, max_age=3600, path=path, secure=secure, httponly=True, samesite="Strict")
    return token


def sign_in_token_matches(req: Request) -> bool:
    cookie = req.cookies.get(_sign_in_cookie()[0], "")
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
    app.config.setdefault("CONSOLE_REDIS_PREFIX", f"{settings.redis_prefix}console:")
