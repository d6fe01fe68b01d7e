"""Rate limits: events per team on ingest, requests per key on the read and key routes.

Token buckets kept in each web process. Each process enforces `limit / processes`
(`Settings.web_processes`: WEB_CONCURRENCY, which the gunicorn config hands its workers)
so the whole deployment enforces about `limit` per second, with bursts up to `burst`.
They are kept in memory on purpose: a Redis round trip per request would cost more than
the check is worth, and ingest must keep working when Redis is down.

A request pays for everything it carries: a batch of 2,500 events takes 2,500 tokens,
even when the burst is smaller. Such a batch is let through once the bucket holds a
full burst, and leaves the bucket in debt, so the events that follow wait until the
team is back under its rate (docs/rate-limits.md).

Settings: INGEST_RATE_LIMIT (events/s per team, 0 turns it off) and INGEST_RATE_BURST;
API_RATE_LIMIT (requests/s per key on the read and key routes, 0 turns it off) and
API_RATE_BURST.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from flask import current_app

from app.errors import ApiError
from app.resources import resources


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self, count: float) -> float:
        """0 if `count` tokens were taken, else seconds until they could be (nothing taken).

        A cost above the burst is let through when the bucket is full and leaves it in
        debt (tokens below zero): every token is paid, none is skipped.
        """
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        needed = min(count, self.burst)
        if self.tokens >= needed:
            self.tokens -= count
            return 0.0
        return (needed - self.tokens) / self.rate


@dataclass
class TeamLimiter:
    """The buckets of one app, by team."""

    buckets: dict[int, TokenBucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _share() -> int:
    return resources().settings.web_processes


def _limiter(name: str = "ingest_rate_limiter") -> TeamLimiter:
    limiter: TeamLimiter = current_app.extensions.setdefault(name, TeamLimiter())
    return limiter


def _take(limiter: TeamLimiter, owner: int, limit: float, burst: float, cost: float) -> float:
    share = _share()
    with limiter.lock:
        bucket = limiter.buckets.get(owner)
        if bucket is None:
            rate = limit / share
            bucket = limiter.buckets[owner] = TokenBucket(rate, max(burst / share, rate))
        return bucket.take(cost)


def check_rate_limit(team_id: int, events: int) -> None:
    """Take `events` (the request's cost: one per event) from the team's bucket, or raise
    429 with Retry-After (nothing taken)."""
    settings = resources().settings
    if settings.ingest_rate_limit <= 0:
        return
    wait = _take(_limiter(), team_id, settings.ingest_rate_limit, settings.ingest_rate_burst, events)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"This team is over its limit of {settings.ingest_rate_limit:g} events per second; "
            f"nothing was stored. Retry after {retry} seconds.",
            headers={"Retry-After": str(retry)},
        )


def check_key_rate_limit(key_id: int) -> None:
    """One request of this key on a read or key route, or 429 with Retry-After."""
    settings = resources().settings
    limit = settings.api_rate_limit
    if limit <= 0:
        return
    wait = _take(_limiter("api_rate_limiter"), key_id, limit, settings.api_rate_burst, 1)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"This API key is over its limit of {limit:g} requests per second. Retry after {retry} seconds.",
            headers={"Retry-After": str(retry)},
        )
