"""Reading an ingest body the way Segment's senders write it.

Any Content-Type (analytics.js posts text/plain), gzip with a bound on the inflated
size, strict JSON (no NaN/Infinity, which Postgres cannot store), and the checks for
what JSON allows but JSONB refuses: NUL characters and lone surrogates.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

from flask import request

from app.errors import ApiError

MAX_REQUEST_BYTES = 500 * 1024
MAX_DEPTH = 64

# Cheap pre-checks on the raw bytes: only bodies that match are walked in Python.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _too_large(what: str) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"{what} is larger than {MAX_REQUEST_BYTES // 1024} KiB; send fewer events per request.",
    )


def read_body_bytes() -> bytes:
    """The request body, inflated if gzipped, never more than MAX_REQUEST_BYTES."""
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise _too_large("The request body")
    data = request.stream.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        raise _too_large("The request body")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            raise ApiError(400, "invalid_gzip", "The body is not valid gzip data.") from None
        if len(data) > MAX_REQUEST_BYTES or inflater.unconsumed_tail:
            raise _too_large("The inflated request body")
    elif encoding not in ("", "identity"):
        raise ApiError(
            400,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding.",
        )
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def parse_json(data: bytes) -> Any:
    """Decode strict JSON, or raise a 400 that says what is wrong."""
    if not data.strip():
        raise ApiError(400, "invalid_json", "The body is empty; send a JSON event or batch.")
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(
            400, "too_deep", f"The JSON is nested too deeply (at most {MAX_DEPTH} levels)."
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "The body is not valid UTF-8.") from None
    except ValueError as error:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {error}.") from None


def needs_deep_check(data: bytes) -> tuple[bool, bool]:
    """(may hold NUL or lone surrogates, may be nested deeply): decided on raw bytes."""
    return bool(_SUSPECT_ESCAPE.search(data)), data.count(b"{") + data.count(b"[") > MAX_DEPTH


def unstorable_path(value: Any, path: str = "") -> str | None:
    """The path of the first string or key Postgres JSONB cannot store, if any."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _bad_text(item):
                return where or "(event)"
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if _bad_text(key):
                    return child_path
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in a decoded value."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest
