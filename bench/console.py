"""The console's customer page at scale: a customer with 100,000 events (SPEC §8, §10).

The page (profile, traits, groups, the newest visits, the activity chart of the last 90
days and the newest 50 items of the timeline, rendered) is read over HTTP by one
signed-in client, back to back, from the same web process and dataset as the feed
figures; the dataset's customer has all its 100,000 events in the chart's 90 days
(bench/feed.py), so the chart counts every one of them on each read. Two figures: the
page's HTTP latency, and its server time as the console reports it in
`Server-Timing: app;dur=…` (from the session's key check to the rendered page). Beside
them, the feed API's first page: the same timeline page as JSON. Target: server time
under 100 ms.
"""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.feed import FeedDataset
from bench.load import percentile

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_SERVER_TIME = re.compile(r"app;dur=([0-9.]+)")


@dataclass
class PageTimes:
    count: int
    http_p50_ms: float
    http_p99_ms: float
    server_p50_ms: float
    server_p99_ms: float


def sign_in(connection: http.client.HTTPConnection, key: str) -> str:
    """Sign in through the form, as an agent does; the Cookie header for the session."""
    connection.request("GET", "/console/sign-in")
    response = connection.getresponse()
    body = response.read().decode()
    found = _CSRF.search(body)
    if response.status != 200 or found is None:
        raise RuntimeError(f"console sign-in page answered {response.status}")
    form_cookie = _cookie(response, "__Host-console_sign_in")  # app/console/session.py (loopback)
    connection.request(
        "POST",
        "/console/sign-in",
        body=urlencode({"csrf": found.group(1), "key": key}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": form_cookie},
    )
    response = connection.getresponse()
    response.read()
    if response.status != 303:
        raise RuntimeError(f"console sign-in answered {response.status}")
    return _cookie(response, "console_session")


def _cookie(response: http.client.HTTPResponse, name: str) -> str:
    for header in response.headers.get_all("Set-Cookie") or []:
        if header.startswith(name + "="):
            return header.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie was set")


def page_times(base: str, path: str, key: str, seconds: float, require: bytes | None = None) -> PageTimes:
    """One signed-in client reading `path` back to back for `seconds`, on one connection;
    each answer must hold `require` when given."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        cookie = sign_in(connection, key)
        http_ms: list[float] = []
        server_ms: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end or not http_ms:
            started = time.perf_counter()
            connection.request("GET", path, headers={"Cookie": cookie})
            response = connection.getresponse()
            body = response.read()
            http_ms.append((time.perf_counter() - started) * 1000)
            timing = _SERVER_TIME.search(response.headers.get("Server-Timing", ""))
            if response.status != 200 or timing is None or b'id="timeline"' not in body:
                raise RuntimeError(f"console page answered {response.status}: {body[:300]!r}")
            if require is not None and require not in body:
                raise RuntimeError(f"console page lacks {require!r}")
            server_ms.append(float(timing.group(1)))
    finally:
        connection.close()
    return PageTimes(
        len(http_ms),
        round(percentile(http_ms, 50), 2),
        round(percentile(http_ms, 99), 2),
        round(percentile(server_ms, 50), 2),
        round(percentile(server_ms, 99), 2),
    )


def measure_console(
    base: str, dataset: FeedDataset, seconds: float, feed_first_page: dict[str, Any] | None
) -> dict[str, Any]:
    """The dataset customer's page, with the feed API's first page (its `http` figures) beside it."""
    # The chart with its bars: the page measured counts the customer's days.
    times = page_times(
        base, f"/console/customers/{dataset.customer_id}", dataset.team.key, seconds, require=b'class="bar"'
    )
    return {**asdict(times), "feed_first_page_http": feed_first_page.get("http") if feed_first_page else None}
