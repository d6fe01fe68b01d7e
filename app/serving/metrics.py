"""Prometheus metrics: events accepted and rejected, request latency, fold backlog.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (the gunicorn config
does) so /metrics adds up every process. /metrics wants `Bearer METRICS_TOKEN` when that
is set, and reads the fold figures from Postgres and Redis at most once every
METRICS_REFRESH_SECONDS per process (docs/operations.md).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.resources import resources
from schemas.segment import SUPPORTED_TYPES, PreparedEvent

EVENTS_ACCEPTED = Counter("events_accepted_total", "Events stored, by type", ["type"])
EVENTS_REJECTED = Counter("events_rejected_total", "Events refused, by type and reason", ["type", "reason"])
INGEST_REQUESTS_REJECTED = Counter(
    "ingest_requests_rejected_total", "Ingest requests answered with an error, by reason", ["reason"]
)
FOLD_WAKE_FAILURES = Counter(
    "ingest_fold_wake_failures_total", "Fold wake-ups (per team) that failed, Redis down; retried, and swept"
)
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Request latency",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


# The ingest lane's children, by label values (bounded: event types; route x status).
# `labels()` takes a lock and builds its key on every call; a dict lookup does not.
_accepted: dict[str, Any] = {}
_latency: dict[tuple[str, int], Any] = {}


def events_accepted(events: Sequence[PreparedEvent]) -> None:
    if len(events) == 1:  # the common case: no tally
        kind = events[0].type
        child = _accepted.get(kind) or _accepted.setdefault(kind, EVENTS_ACCEPTED.labels(kind))
        child.inc()
        return
    for kind, count in TallyCounter(event.type for event in events).items():
        EVENTS_ACCEPTED.labels(kind).inc(count)


def _type_label(item: Any) -> str:
    kind = item.get("type") if isinstance(item, dict) else None
    return kind if isinstance(kind, str) and kind in SUPPORTED_TYPES else "other"


def events_rejected(item: Any, reason: str) -> None:
    """One event refused; the label is its type when it is one we know (bounded cardinality)."""
    EVENTS_REJECTED.labels(_type_label(item), reason).inc()


def events_rate_limited(events: Iterable[PreparedEvent]) -> None:
    for kind, count in TallyCounter(event.type for event in events).items():
        EVENTS_REJECTED.labels(kind, "rate_limited").inc(count)


def request_rejected(reason: str) -> None:
    """An ingest request answered with an error (whatever happened to its events)."""
    INGEST_REQUESTS_REJECTED.labels(reason).inc()


def request_observed(route: str, status: int, seconds: float) -> None:
    """One request's latency, for the routes answered in front of Flask (app/ingest/lane.py)."""
    child = _latency.get((route, status))
    if child is None:
        child = _latency.setdefault((route, status), REQUEST_LATENCY.labels(route, str(status)))
    child.observe(seconds)


def render(extra: str = "") -> Response:
    if resources().settings.prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest()
    return Response(text + extra.encode(), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            REQUEST_LATENCY.labels(route, str(response.status_code)).observe(time.perf_counter() - started)
        return response


# --- /metrics: who may read it, and the fold figures it shows --------------------------


def check_metrics_token(expected: str, header: str) -> bool:
    """Whether `Authorization` carries `Bearer <METRICS_TOKEN>`; always true when none is set."""
    if not expected:
        return True
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())


@dataclass(frozen=True)
class FoldFigures:
    """The fold's backlog as last read; None where its source could not be read."""

    backlog: int | None
    lag_seconds: float | None
    queue_depth: int | None
    set_aside: int | None = None  # events the fold set aside (workers/poison.py)
    failing_deletes: int | None = None  # deletes that could not complete yet (must be 0)

    def exposition(self) -> str:
        """Prometheus text. A source that could not be read says so (`..._up 0`, values NaN)."""

        def value(number: float | None, fmt: str) -> str:
            return "NaN" if number is None else format(number, fmt)

        postgres_up = 0 if self.backlog is None else 1
        redis_up = 0 if self.queue_depth is None else 1
        lines = [
            "# HELP fold_backlog_up 1 when the fold backlog could be read from Postgres, else 0",
            "# TYPE fold_backlog_up gauge",
            f"fold_backlog_up {postgres_up}",
            "# HELP fold_backlog_events Stored events not folded yet",
            "# TYPE fold_backlog_events gauge",
            f"fold_backlog_events {value(self.backlog, 'd')}",
            "# HELP fold_lag_seconds Age of the oldest unfolded event",
            "# TYPE fold_lag_seconds gauge",
            f"fold_lag_seconds {value(self.lag_seconds, '.3f')}",
            "# HELP fold_queue_up 1 when the fold queue could be read from Redis, else 0",
            "# TYPE fold_queue_up gauge",
            f"fold_queue_up {redis_up}",
            "# HELP fold_queue_depth Fold jobs waiting in RQ",
            "# TYPE fold_queue_depth gauge",
            f"fold_queue_depth {value(self.queue_depth, 'd')}",
            "# HELP fold_set_aside_events Events the fold could not fold, set aside with their error",
            "# TYPE fold_set_aside_events gauge",
            f"fold_set_aside_events {value(self.set_aside, 'd')}",
            "# HELP fold_failing_deletes Deletes that could not complete, retried with every batch",
            "# TYPE fold_failing_deletes gauge",
            f"fold_failing_deletes {value(self.failing_deletes, 'd')}",
        ]
        return "\n".join(lines) + "\n"


class FoldFiguresCache:
    """The fold figures, read at most once per `refresh_seconds` by this process.

    A scraper (or anyone, when no token is set) calling /metrics in a loop costs two
    cheap reads every few seconds, not two queries a call. One caller refreshes at a
    time; the others answer with the figures they have.
    """

    def __init__(self, read: Callable[[], FoldFigures], refresh_seconds: float):
        self.read = read
        self.refresh_seconds = refresh_seconds
        self._figures: FoldFigures | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def figures(self) -> FoldFigures:
        now = time.monotonic()
        if self._figures is not None and 0 <= now - self._read_at < self.refresh_seconds:
            return self._figures
        # The first caller waits for the figures; later ones never wait for a refresh.
        if not self._lock.acquire(blocking=self._figures is None):
            assert self._figures is not None
            return self._figures
        try:
            if self._figures is None or not 0 <= time.monotonic() - self._read_at < self.refresh_seconds:
                self._figures = self.read()
                self._read_at = time.monotonic()
            return self._figures
        finally:
            self._lock.release()
