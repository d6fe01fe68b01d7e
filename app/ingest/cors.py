"""CORS for the ingest routes, and only them (SPEC §2): analytics.js posts from any website.

analytics.js (`@segment/analytics-next`) sends `Authorization` (and `X-Retry-Count` on
retries), so the browser first sends a preflight `OPTIONS`; without an answer allowing
them it never sends the POST. Every ingest answer, errors included, carries
`Access-Control-Allow-Origin`, or the page's script cannot read a 400 or a 429 and only
sees a network error. The read API and the console never answer CORS: their keys and
sessions must not be usable from another site's page.

`*` as the origin: the ingest routes read no cookie, so nothing is gained by naming the
origin, and one answer serves every site (a page that sets fetch's `credentials:
"include"` is refused by the browser; analytics.js leaves it unset). Flask-free: the
ingest lane (app/ingest/lane.py) answers in front of Flask's dispatch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["ANSWER_HEADERS", "MAX_AGE_SECONDS", "answering", "preflight"]

StartResponse = Callable[..., Any]

# Chromium caps a cached preflight at two hours (Firefox at a day): longer says nothing more.
MAX_AGE_SECONDS = 7200
# On every ingest answer: any page may read it, and a 429's or 503's Retry-After with it.
ANSWER_HEADERS = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", "Retry-After")]
# A header name (RFC 9110 token); the requested list is echoed only as such names.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_MAX_REQUESTED_HEADERS = 30


def answering(start_response: StartResponse) -> StartResponse:
    """`start_response` that adds the CORS answer headers to whatever is answered without them."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(name == "Access-Control-Allow-Origin" for name, _ in headers):
            headers = [*headers, *ANSWER_HEADERS]
        return start_response(status, headers, exc_info)

    return start


def preflight(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """The answer to a preflight `OPTIONS`: POST and the requested headers allowed, for MAX_AGE_SECONDS.

    The ingest routes take only POST, so that is the one method allowed whatever was
    asked (a preflight for another method is then refused by the browser, rightly).
    """
    requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
    names = [name.strip() for name in requested.split(",")[:_MAX_REQUESTED_HEADERS]]
    allowed = ", ".join(name for name in names if _HEADER_NAME.fullmatch(name))
    headers = [
        *ANSWER_HEADERS,
        ("Access-Control-Allow-Methods", "POST"),
        ("Access-Control-Max-Age", str(MAX_AGE_SECONDS)),
        ("Vary", "Access-Control-Request-Headers"),
        ("Content-Length", "0"),
    ]
    if allowed:
        headers.append(("Access-Control-Allow-Headers", allowed))
    start_response("204 No Content", headers)
    return []
