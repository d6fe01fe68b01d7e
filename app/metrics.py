"""Prometheus metrics: events accepted and rejected, request latency, fold backlog.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (the gunicorn config
does) so /metrics adds up every process.
"""

from __future__ import annotations

import time
from collections import Counter as TallyCounter
from collections.abc import Iterable, Sequence
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
from store.fold_failures import count_set_aside

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


def events_accepted(events: Sequence[PreparedEvent]) -> None:
    if len(events) == 1:  # the common case: no tally
        EVENTS_ACCEPTED.labels(events[0].type).inc()
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


def fold_set_aside_gauge() -> str:
    """The `fold_set_aside_events` gauge (workers/poison.py), or nothing if it cannot be read."""
    try:
        with resources().engine.connect() as connection:
            count = count_set_aside(connection)
    except Exception:
        return ""
    return (
        "# HELP fold_set_aside_events Events the fold could not fold, set aside with their error\n"
        f"# TYPE fold_set_aside_events gauge\nfold_set_aside_events {count}\n"
    )


def render(extra: str = "") -> Response:
    extra += fold_set_aside_gauge()
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
