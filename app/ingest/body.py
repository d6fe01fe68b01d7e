"""Reading an ingest body the way Segment's senders write it, from the WSGI environ.

Any Content-Type (analytics.js posts text/plain), gzip with a bound on the inflated
size, strict JSON in UTF-8 (no NaN/Infinity, which Postgres cannot store). Flask-free:
the ingest lane (app/ingest/lane.py) reads the environ itself. The repairs for what JSON
allows but JSONB refuses (NUL, lone surrogates) are Spec rules: `schemas/batch.py`.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import IO, Any

import orjson
from werkzeug.wsgi import get_content_length

from app.errors import ApiError
from schemas.batch import Scan, make_storable
from schemas.segment import MAX_DEPTH

__all__ = ["MAX_DEPTH", "MAX_REQUEST_BYTES", "decode_content", "make_storable", "parse_json", "read_raw_body"]

MAX_REQUEST_BYTES = 500 * 1024
# A body over the limit is still read (and dropped) when it is at most this long in all,
# before the 413: a client that writes its whole body before reading the answer (Python's
# http.client, many SDKs) would otherwise see a reset or a broken pipe instead of our 413,
# and retry. Beyond it the 413 is sent at once (docs/ingest.md).
DRAIN_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
# orjson reads integers beyond 64 bits as floats, where the stdlib keeps them exact: a
# body with a run of 19 digits anywhere takes the stdlib path. Found ten times faster
# than a regex would: digits become "0", everything else ".", and `in` does the rest.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))
_LONG_RUN = b"0" * 19


def _bad_body(code: str, message: str) -> ApiError:
    """A 400 about the body as a whole (the envelope's `errors` names it `body`)."""
    return ApiError(400, code, message, {"body": [message]})


def _too_large(what: str) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"{what} is larger than {MAX_REQUEST_BYTES // 1024} KiB; send fewer events per request.",
    )


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to `limit` bytes of the body; a socket read may return less than asked, so loop."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = stream.read(min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _discard(stream: IO[bytes], limit: int) -> None:
    """Read and drop up to `limit` bytes of the body."""
    while limit > 0:
        chunk = stream.read(min(_READ_CHUNK, limit))
        if not chunk:
            return
        limit -= len(chunk)


def read_raw_body(environ: dict[str, Any]) -> bytes:
    """The request body as sent (still compressed), never more than MAX_REQUEST_BYTES.

    As werkzeug reads it: Content-Length bytes, or to the end of a stream the server
    terminates (a chunked body), or nothing. Over the limit: a 413, once at most
    DRAIN_BYTES of the body are read and dropped.
    """
    stream: IO[bytes] = environ["wsgi.input"]
    length = get_content_length(environ)
    if length is not None and length > MAX_REQUEST_BYTES:
        if length <= DRAIN_BYTES:
            _discard(stream, length)
        raise _too_large("The request body")
    if length is None and "wsgi.input_terminated" not in environ:
        return b""
    data = _read_at_most(stream, MAX_REQUEST_BYTES + 1 if length is None else length)
    if len(data) > MAX_REQUEST_BYTES:  # a chunked body that goes past the limit
        _discard(stream, DRAIN_BYTES - len(data))
        raise _too_large("The request body")
    return data


def decode_content(environ: dict[str, Any], data: bytes) -> bytes:
    """The body inflated as its Content-Encoding says, never more than MAX_REQUEST_BYTES."""
    encoding = environ.get("HTTP_CONTENT_ENCODING", "")
    if not encoding:
        return data
    encoding = encoding.strip().lower()
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


def parse_json(data: bytes, scan: Scan = Scan.EVERYTHING) -> Any:
    """Decode strict JSON, or raise a 400 that says what is wrong.

    Plain bodies (no escape of a NUL or a surrogate, shallow, no integer beyond 64 bits:
    `scan` and one regex say so) are decoded by orjson, which reads strict UTF-8 JSON as
    the stdlib path below does, several times faster. Anything else, and anything orjson
    refuses, goes to the stdlib path, which decides and words the error.
    """
    if not (scan.unstorable_text or scan.deep) and _LONG_RUN not in data.translate(_DIGITS):
        try:
            return orjson.loads(data[3:] if data.startswith(_BOM) else data)
        except orjson.JSONDecodeError:
            pass
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
