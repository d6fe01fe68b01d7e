"""Per-team ingest rate limit: a token bucket per team in each web process.

Each process enforces `limit / processes` (`Settings.web_processes`: WEB_CONCURRENCY,
which the gunicorn config hands its workers) so the whole deployment enforces about
`limit` events per second, with bursts up to `burst`. It is kept in memory on purpose:
a Redis round trip per request would cost more than the check is worth, and ingest must
keep working when Redis is down.
Settings: INGEST_RATE_LIMIT (events/s per team, 0 turns it off) and INGEST_RATE_BURST.
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
        """0 if `count` tokens were taken, else seconds until they would be there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= count:
            self.tokens -= count
            return 0.0
        return (count - self.tokens) / self.rate


@dataclass
class TeamLimiter:
    """The buckets of one app, by team."""

    buckets: dict[int, TokenBucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _share() -> int:
    return resources().settings.web_processes


def _limiter() -> TeamLimiter:
    limiter: TeamLimiter = current_app.extensions.setdefault("ingest_rate_limiter", TeamLimiter())
    return limiter


def check_rate_limit(team_id: int, events: int) -> None:
    """Take `events` from the team's bucket, or raise 429 with Retry-After (nothing taken)."""
    settings = resources().settings
    if settings.ingest_rate_limit <= 0:
        return
    share = _share()
    limiter = _limiter()
    with limiter.lock:
        bucket = limiter.buckets.get(team_id)
        if bucket is None:
            rate = settings.ingest_rate_limit / share
            bucket = limiter.buckets[team_id] = TokenBucket(
                rate, max(settings.ingest_rate_burst / share, rate)
            )
        # A request larger than the whole burst could never pass: it waits for a full bucket.
        wait = bucket.take(min(events, bucket.burst))
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"This team is over its limit of {settings.ingest_rate_limit:g} events per second; "
            f"nothing was stored. Retry after {retry} seconds.",
            headers={"Retry-After": str(retry)},
        )
