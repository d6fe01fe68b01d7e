"""The ingest ceiling: a bare WSGI app that answers the same POST and does nothing else.

Served by gunicorn with the same config module and worker count as the product
(`gunicorn -c python:app.serving.gunicorn_config bench.bare:app`), it measures what gunicorn,
the kernel's loopback and the load generator allow on this machine: the most any
WSGI app could answer here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

ANSWER = b'{"success":true}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the whole body (as any app must), answer 200 {"success": true}."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [ANSWER]
