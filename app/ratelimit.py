"""Per-team ingest rate limit: a token bucket per team in each web process.

Each process enforces `limit / processes` so the whole deployment enforces about
`limit`. It is kept in memory on purpose: a Redis round trip per request would cost more
than the check is worth, and ingest must keep working when Redis is down.
"""

from __future__ import annotations

import math
import os
import threading
import time

from app.errors import ApiError
from app.resources import resources


class TokenBucket:
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


_buckets: dict[int, TokenBucket] = {}
_lock = threading.Lock()


def _share() -> int:
    return max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))


def check_rate_limit(team_id: int, events: int) -> None:
    """Raise 429 with Retry-After when the team is over its limit."""
    settings = resources().settings
    if settings.ingest_rate_limit <= 0:
        return
    share = _share()
    with _lock:
        bucket = _buckets.get(team_id)
        if bucket is None:
            bucket = _buckets[team_id] = TokenBucket(
                settings.ingest_rate_limit / share, max(settings.ingest_rate_burst / share, events)
            )
        wait = bucket.take(min(events, bucket.burst))
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many events for this team; retry after {retry} seconds.",
            headers={"Retry-After": str(retry)},
        )
