"""Sign-in failures, counted and limited: per client address and per key prefix.

A refused sign-in (an unknown, revoked, expired, rotated or read-less key) costs a key
lookup, often a database read. Each one is counted in Redis, in a fixed window of
`CONSOLE_SIGN_IN_WINDOW` seconds (900), under the client's address and under the key's
displayed prefix (its first 12 characters, as `GET /api/v1/keys` shows them); once either
holds `CONSOLE_SIGN_IN_FAILURES` (10) failures, sign-in from that address, or with that
prefix, is answered 429 without looking the key up, until the window ends. Counters
live in Redis (not in each web process) so that all workers and machines share them.
The client's address is the peer's (no proxy header is trusted here).

Each failure is logged as one line, with the address, the reason and the key's prefix
only when it looks like one of our keys (never the key; never the start of whatever
else was pasted into the box).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from flask import Flask, current_app
from redis.exceptions import RedisError

from app.console.session import Unavailable
from app.resources import resources

log = logging.getLogger(__name__)

KEY_PREFIX_LENGTH = 12  # the displayed prefix of a key (store/apikeys/material.py)
FAILURES = 10
WINDOW_SECONDS = 900


@dataclass(frozen=True)
class Throttled:
    """Sign-in is refused for `retry_after` more seconds."""

    retry_after: int


def _counters(address: str, secret: str) -> list[str]:
    prefix = current_app.config["CONSOLE_REDIS_PREFIX"]
    # Hashed: neither the address nor the key's start is kept in Redis as typed.
    by_address = hashlib.sha256(address.encode()).hexdigest()[:32]
    by_key = hashlib.sha256(secret[:KEY_PREFIX_LENGTH].encode()).hexdigest()[:32]
    return [f"{prefix}sign-in-failures:address:{by_address}", f"{prefix}sign-in-failures:key:{by_key}"]


def check(address: str, secret: str) -> Throttled | None:
    """Throttled when this address or this key prefix has failed too often in the window."""
    limit = int(current_app.config["CONSOLE_SIGN_IN_FAILURES"])
    names = _counters(address, secret)
    try:
        with resources().redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
                pipe.ttl(name)
            answers = pipe.execute()
    except RedisError as error:
        raise Unavailable(str(error)) from None
    waits = [
        max(int(ttl), 1)
        for count, ttl in zip(answers[0::2], answers[1::2], strict=True)
        if count is not None and int(count) >= limit
    ]
    return Throttled(max(waits)) if waits else None


def record_failure(address: str, secret: str, reason: str) -> None:
    """Count a refused sign-in under its address and key prefix, and log it (without the key)."""
    window = int(current_app.config["CONSOLE_SIGN_IN_WINDOW"])
    try:
        with resources().redis.pipeline(transaction=True) as pipe:
            for name in _counters(address, secret):
                pipe.set(name, 0, ex=window, nx=True)
                pipe.incr(name)
            answers = pipe.execute()
    except RedisError as error:
        raise Unavailable(str(error)) from None
    shown = secret[:KEY_PREFIX_LENGTH] if secret.startswith("tlk_") else "(not a key)"
    log.warning(
        "console sign-in refused: reason=%s address=%s key_prefix=%s failures_from_address=%s",
        reason,
        address,
        shown,
        answers[1],
    )


def configure(app: Flask) -> None:
    app.config.setdefault("CONSOLE_SIGN_IN_FAILURES", FAILURES)
    app.config.setdefault("CONSOLE_SIGN_IN_WINDOW", WINDOW_SECONDS)
