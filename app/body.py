"""Reading an ingest body the way Segment's senders write it.

Any Content-Type (analytics.js posts text/plain), gzip with a bound on the inflated
size, strict JSON in UTF-8 (no NaN/Infinity, which Postgres cannot store), and the
repairs for what JSON allows but JSONB refuses: NUL characters and lone surrogates.
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
_READ_CHUNK = 64 * 1024

# Cheap pre-check on the raw bytes: only bodies that match are walked in Python. Strict
# UTF-8 decoding refuses raw surrogate bytes and JSON refuses raw control characters, so
# a NUL or a lone surrogate can only arrive as a \u escape.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# What Postgres text and JSONB cannot hold: NUL, and UTF-16 surrogates (valid pairs were
# already joined into one code point by the JSON decoder, so any left here are alone).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def _bad_body(code: str, message: str) -> ApiError:
    """A 400 about the body as a whole (the envelope's `errors` names it `body`)."""
    return ApiError(400, code, message, {"body": [message]})


def _too_large(what: str) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"{what} is larger than {MAX_REQUEST_BYTES // 1024} KiB; send fewer events per request.",
    )


def _read_at_most(limit: int) -> bytes:
    """Up to `limit` bytes of the body; a socket read may return less than asked, so loop."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = request.stream.read(min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_raw_body() -> bytes:
    """The request body as sent (still compressed), never more than MAX_REQUEST_BYTES."""
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise _too_large("The request body")
    data = _read_at_most(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        raise _too_large("The request body")
    return data


def decode_content(data: bytes) -> bytes:
    """The body inflated as its Content-Encoding says, never more than MAX_REQUEST_BYTES."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(data)
    if encoding not in ("", "identity"):
        raise _bad_body(
            "unsupported_encoding",
            f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or no encoding.",
        )
    return data


def _gunzip(data: bytes) -> bytes:
    """Inflate at most MAX_REQUEST_BYTES + 1 bytes, so a gzip bomb costs us nothing."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, MAX_REQUEST_BYTES + 1)
    except zlib.error:
        raise _bad_body("invalid_gzip", "The body is not valid gzip data.") from None
    if len(inflated) > MAX_REQUEST_BYTES or inflater.unconsumed_tail:
        raise _too_large("The inflated request body")
    if not inflater.eof:
        raise _bad_body("invalid_gzip", "The gzip body is truncated; send the whole stream.")
    return inflated


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
        raise _bad_body("invalid_json", "The body is empty; send a JSON event or batch.")
    try:
        # json.loads(bytes) would let UTF-8-encoded surrogates through (surrogatepass),
        # and guess UTF-16/32, which the byte-level checks here do not read: decode
        # strictly as UTF-8 (RFC 8259), allowing a byte order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _bad_body("invalid_encoding", "The body is not valid UTF-8; send UTF-8 JSON.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _bad_body("too_deep", f"The JSON is nested too deeply (at most {MAX_DEPTH} levels).") from None
    except json.JSONDecodeError as error:
        raise _bad_body("invalid_json", f"The body is not valid JSON: {error}.") from None
    except ValueError as error:
        # int() refuses numbers of more than 4,300 digits; our own hooks refuse NaN/Infinity.
        reason = "a number has too many digits" if "digits" in str(error) else str(error)
        raise _bad_body("invalid_json", f"The body is not valid JSON: {reason}.") from None


def needs_deep_check(data: bytes) -> tuple[bool, bool]:
    """(may hold NUL or lone surrogates, may be nested deeply): decided on raw bytes."""
    return bool(_SUSPECT_ESCAPE.search(data)), data.count(b"{") + data.count(b"[") > MAX_DEPTH


def make_storable(value: Any) -> Any:
    """The value with each NUL and lone surrogate (in strings and keys) replaced by U+FFFD.

    JSON allows them, Postgres text and JSONB refuse them. The rest of the event is worth
    keeping, so the character is replaced rather than the event refused. Call it only on
    values whose depth was checked: it recurses.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_UNSTORABLE.sub(REPLACEMENT, key): make_storable(child) for key, child in value.items()}
    if isinstance(value, list):
        return [make_storable(child) for child in value]
    return value


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
