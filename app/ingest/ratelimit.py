"""Rate limits: ingest budgets per team (events, requests, bytes), requests per key on the
read and key routes.

Token buckets kept in each web process. Each process enforces `limit / processes`
(`Settings.web_processes`: WEB_CONCURRENCY, which the gunicorn config hands its workers)
so the whole deployment enforces about `limit` per second, with bursts up to `burst`.
They are kept in memory on purpose: a Redis round trip per request would cost more than
the check is worth, and ingest must keep working when Redis is down.

A request pays for everything it carries: a batch of 2,500 events takes 2,500 tokens,
even when the burst is smaller. Such a batch is let through once the bucket holds a
full burst, and leaves the bucket in debt, so the events that follow wait until the
team is back under its rate.

Ingest pays what it costs the machine, refused or not (docs/rate-limits.md has the
defaults' derivation): `admit` takes one request and the body's bytes as soon as the
team is known, before the body is parsed, and refuses (429) a team over any of its
budgets, so a flood of invalid events is answered 429 as cheaply as a valid one;
`take_events` takes the events of a stored request, and `charge_refused` the events of
a refused one (whatever the balance: they were already paid for in work).

An ingest 429 is answered after a pause (`RefusalHold`, INGEST_REFUSAL_HOLD_SECONDS,
1 s; at most `REFUSAL_HOLDS_MAX` answers held at once in a process, the rest answered at
once): a client that resends as soon as it is answered, ignoring Retry-After, then
sends one request a second per connection instead of as many as the server can refuse,
and the refusals stop taking the CPU that other teams' requests need. A held answer
costs a greenlet and its connection, no CPU.

And at most INGEST_TEAM_CONCURRENCY (4) of one team's ingest requests are parsed and
stored at once in a process (`TeamTurns`); the team's others wait their turn, without
CPU, after their body is read and their key checked. A team's burst (sixteen large
batches at once) then cannot fill a process and keep every other team's requests
waiting behind it; a well-behaved client's burst is only queued, never refused.

Settings: INGEST_RATE_LIMIT / INGEST_RATE_BURST (events/s per team),
INGEST_REQUEST_LIMIT / INGEST_REQUEST_BURST (requests/s per team), INGEST_BYTE_LIMIT /
INGEST_BYTE_BURST (body bytes/s per team); API_RATE_LIMIT / API_RATE_BURST (requests/s
per key on the read and key routes). A limit of 0 turns that budget off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from app.errors import ApiError
from service.settings import Settings

# Ingest 429s held at once in one process (`RefusalHold`); past this, answered at once.
REFUSAL_HOLDS_MAX = 512


class RefusalHold:
    """Holds an ingest 429 for up to `seconds` before it is answered (see the module's
    docstring). A gevent worker's sleep yields to the other requests; `sleep` is a
    parameter so a test can see the pause without waiting for it."""

    def __init__(
        self, seconds: float, most: int = REFUSAL_HOLDS_MAX, sleep: Callable[[float], None] | None = None
    ):
        self.seconds = seconds
        self.most = most
        self.sleep = sleep
        self.holding = 0
        self.held = 0  # answers held so far (a figure for tests and debugging)
        self.lock = threading.Lock()

    def pause(self, error: ApiError) -> float:
        """Sleep before `error` (a 429) is answered: its Retry-After, at most `seconds`;
        nothing when holds are off or `most` are already held. Returns the pause."""
        if self.seconds <= 0 or error.status != 429:
            return 0.0
        with self.lock:
            if self.holding >= self.most:
                return 0.0
            self.holding += 1
            self.held += 1
        try:
            pause = min(self.seconds, float(error.headers.get("Retry-After", self.seconds)))
            (self.sleep or time.sleep)(pause)  # looked up now: gevent's, once the worker patched it
            return pause
        finally:
            with self.lock:
                self.holding -= 1


# How long a team's request waits for its turn before it is answered 429.
TURN_WAIT_SECONDS = 10.0


class TeamTurns:
    """At most `concurrency` requests of one team in progress in this process (0: no
    bound). `enter` waits for a turn (a gevent worker's lock yields while it waits),
    or raises a 429 after `TURN_WAIT_SECONDS`; `leave` gives the turn back."""

    def __init__(self, concurrency: int, wait: float = TURN_WAIT_SECONDS):
        self.concurrency = concurrency
        self.wait = wait
        self.turns: dict[int, threading.BoundedSemaphore] = {}
        self.lock = threading.Lock()

    def enter(self, team_id: int) -> bool:
        """True once the team has a turn to give back; False when turns are off."""
        if self.concurrency <= 0:
            return False
        with self.lock:
            turns = self.turns.get(team_id)
            if turns is None:
                turns = self.turns[team_id] = threading.BoundedSemaphore(self.concurrency)
        if not turns.acquire(timeout=self.wait):
            retry = max(1, math.ceil(self.wait / 10))
            raise ApiError(
                429,
                "rate_limited",
                f"This team has {self.concurrency} ingest requests in progress on this server and more "
                f"waiting; send fewer at once. Retry after {retry} seconds.",
                headers={"Retry-After": str(retry)},
            )
        return True

    def leave(self, team_id: int) -> None:
        self.turns[team_id].release()


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
        wait = self.wait(count)
        if wait == 0.0:
            self.tokens -= count
        return wait

    def wait(self, count: float) -> float:
        """Seconds until `count` tokens could be taken (0: now); nothing taken."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        needed = min(count, self.burst)
        if self.tokens >= needed:
            return 0.0
        return (needed - self.tokens) / self.rate

    def charge(self, count: float) -> None:
        """Take `count` tokens whatever the balance (debt allowed): work already done."""
        self.wait(count)
        self.tokens -= count


@dataclass
class Limiter:
    """Buckets by owner (team or key), each at `limit / processes` a second."""

    limit: float
    burst: float
    processes: int
    buckets: dict[int, TokenBucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bucket(self, owner: int) -> TokenBucket:
        """The owner's bucket (made full on first use); call with `lock` held."""
        bucket = self.buckets.get(owner)
        if bucket is None:
            rate = self.limit / self.processes
            bucket = self.buckets[owner] = TokenBucket(rate, max(self.burst / self.processes, rate))
        return bucket

    def take(self, owner: int, cost: float) -> float:
        """0 if taken, else seconds until it could be (`TokenBucket.take`)."""
        with self.lock:
            return self.bucket(owner).take(cost)


class RateLimits:
    """One app's limits, made from its settings once (`init_app`); no Flask inside, so the
    ingest lane (app/ingest/lane.py) calls it directly."""

    def __init__(self, settings: Settings):
        processes = settings.web_processes
        self.ingest_limit = settings.ingest_rate_limit
        self.request_limit = settings.ingest_request_limit
        self.byte_limit = settings.ingest_byte_limit
        self.api_limit = settings.api_rate_limit
        self.ingest = Limiter(settings.ingest_rate_limit, settings.ingest_rate_burst, processes)
        self.ingest_requests = Limiter(self.request_limit, settings.ingest_request_burst, processes)
        self.ingest_bytes = Limiter(self.byte_limit, settings.ingest_byte_burst, processes)
        self.api = Limiter(settings.api_rate_limit, settings.api_rate_burst, processes)
        self.refusal_hold = RefusalHold(settings.ingest_refusal_hold_seconds)
        self.team_turns = TeamTurns(settings.ingest_team_concurrency)

    def admit(self, team_id: int, size: int) -> None:
        """A team's ingest request, before its body is parsed: one request and `size` bytes
        taken, or 429 with Retry-After (nothing taken) when the team is over its request or
        byte budget, or has no event left to spend (in debt after a large or refused batch)."""
        waits: list[tuple[float, str]] = []
        if self.ingest_limit > 0:
            with self.ingest.lock:
                waits.append((self.ingest.bucket(team_id).wait(1), f"{self.ingest_limit:g} events"))
        budgets = (
            (self.ingest_requests, self.request_limit, 1, "requests"),
            (self.ingest_bytes, self.byte_limit, size, "bytes of body"),
        )
        for limiter, limit, cost, unit in budgets:
            if limit > 0:
                with limiter.lock:
                    waits.append((limiter.bucket(team_id).wait(cost), f"{limit:g} {unit}"))
        wait, over = max(waits, default=(0.0, ""))
        if wait > 0:
            _refuse_over(
                wait,
                f"This team is over its ingest budget of {over} per second (refused events count "
                "too); nothing was stored.",
            )
        for limiter, limit, cost, _ in budgets:
            if limit > 0:
                with limiter.lock:
                    limiter.bucket(team_id).charge(cost)

    def charge_bytes(self, team_id: int, size: int) -> None:
        """Body bytes the team sent beyond those `admit` took (a gzipped body's inflated size)."""
        if self.byte_limit > 0:
            with self.ingest_bytes.lock:
                self.ingest_bytes.bucket(team_id).charge(size)

    def take_events(self, team_id: int, events: int) -> None:
        """Take `events` (the request's cost: one per event) from the team's bucket, or raise
        429 with Retry-After (nothing taken)."""
        if self.ingest_limit > 0:
            _refuse_over(
                self.ingest.take(team_id, events),
                f"This team is over its limit of {self.ingest_limit:g} events per second; "
                "nothing was stored.",
            )

    def charge_refused(self, team_id: int, events: int) -> None:
        """Refused events are paid for like stored ones: taken whatever the balance, so the
        team's next request is answered 429 until it is back under its rate."""
        if self.ingest_limit > 0:
            with self.ingest.lock:
                self.ingest.bucket(team_id).charge(events)

    def take_request(self, key_id: int) -> None:
        """One request of this key on a read or key route, or 429 with Retry-After."""
        if self.api_limit > 0:
            _refuse_over(
                self.api.take(key_id, 1),
                f"This API key is over its limit of {self.api_limit:g} requests per second.",
            )


def _refuse_over(wait: float, over: str) -> None:
    """Nothing when `wait` is 0 (taken); else the 429 that says when to retry."""
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            429, "rate_limited", f"{over} Retry after {retry} seconds.", headers={"Retry-After": str(retry)}
        )


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["rate_limits"] = RateLimits(settings)


def rate_limits() -> RateLimits:
    """The current app's limits."""
    found: RateLimits = current_app.extensions["rate_limits"]
    return found


def check_key_rate_limit(key_id: int) -> None:
    """`RateLimits.take_request` of the current app."""
    rate_limits().take_request(key_id)
