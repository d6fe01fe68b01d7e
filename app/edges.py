"""Where a request meets the API's rules: one home for what every view reads and refuses.

Query strings and JSON bodies are loaded through marshmallow schemas, and their errors
become the one envelope (`app/errors.py`) with a message that names each bad field;
ids in a path and page limits are ASCII digits; cursors are read by `schemas/cursors.py`
within bounds. Views import this module, never each other (as redash's handlers import
`handlers/base.py`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from app.errors import ApiError
from schemas.api import query_arguments
from schemas.cursors import CursorError, LastId, decode_cursor
from schemas.fields import DEFAULT_LIMIT, MAX_LIMIT, limit_field
from schemas.problems import describe, error_messages, flatten_errors

# An id as the API hands it out: a positive bigint in ASCII digits ("²".isdigit() is True).
_ID = re.compile(r"[0-9]{1,18}")
# How many fields a body's error message names at most (`errors` holds them all).
_NAMED_PROBLEMS = 5


def invalid(error: ValidationError, where: str) -> ApiError:
    """marshmallow's error on the query string (`where="query"`) or the body, as a 400.

    `errors` keeps marshmallow's shape (per argument or field); the message names each
    problem by its dotted path. A bad cursor has its own code, so clients can restart.
    """
    messages = error_messages(error, root=where)
    flat = flatten_errors(messages)
    if where == "query":
        code = "invalid_cursor" if "cursor" in messages else "invalid_query"
        return ApiError(400, code, f"Fix the query string: {describe(flat)}", messages)
    return ApiError(400, "invalid_body", f"Fix the body: {describe(flat, most=_NAMED_PROBLEMS)}", messages)


def load_query(schema: Schema) -> dict[str, Any]:
    """The request's query string through `schema`, or a 400 that names each bad argument."""
    try:
        loaded: dict[str, Any] = schema.load(query_arguments(schema, request.args))
    except ValidationError as error:
        raise invalid(error, "query") from None
    return loaded


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "request_too_large", f"The body is over {max_bytes // 1024} KiB; send less.")


def load_body(schema: Schema, *, max_bytes: int, empty_means: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object body through `schema` (read at most `max_bytes`), or a 4xx saying what to fix.

    An empty body stands for `empty_means` when given (a POST whose every field is optional).
    """
    if (request.content_length or 0) > max_bytes:
        raise too_large(max_bytes)
    raw = request.stream.read(max_bytes + 1)  # bounded even without a Content-Length
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    if not raw.strip() and empty_means is not None:
        body: Any = empty_means
    else:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(
                400,
                "invalid_json",
                "The body is not valid JSON; send a JSON object.",
                {"body": ["Not valid JSON."]},
            ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.", {"body": ["Not an object."]})
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as error:
        raise invalid(error, "body") from None
    return loaded


def not_found(what: str = "customer", hint: str = "") -> ApiError:
    """The 404 of a thing the key's team does not have (another team's ids answer it too).

    `not_found("key", "use an id from GET /api/v1/keys.")`: "No such key in this team; use ...".
    """
    return ApiError(404, "not_found", f"No such {what} in this team{'; ' + hint if hint else '.'}")


def path_id(raw: str, what: str = "customer", hint: str = "") -> int:
    """An id in the path, or the 404 of `not_found` (never echoing it: it may be a pasted secret)."""
    if not _ID.fullmatch(raw):
        raise not_found(what, hint)
    return int(raw)


def query_limit(default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> int:
    """`?limit=` read by the one limit parser, `schemas.fields.limit_field` (ASCII digits
    from 1 to `most`; `default` when absent), for a view that loads no query schema; or a 400."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        limit: int = limit_field(default, most).deserialize(raw)
    except ValidationError:
        raise ApiError(
            400,
            "invalid_limit",
            f"limit must be a whole number from 1 to {most}.",
            {"limit": [f"Must be between 1 and {most}."]},
        ) from None
    return limit


def _bad_cursor() -> ApiError:
    return ApiError(
        400,
        "invalid_cursor",
        "cursor is not one this list returned; start without it.",
        {"cursor": ["Not a cursor from this list."]},
    )


def query_cursor_id(kind: str) -> int | None:
    """The id of `?cursor=` made by `encode_cursor(kind, LastId(id))` (a list paged by id, for a
    view that loads no query schema), None when absent; or a 400."""
    text = request.args.get("cursor")
    if not text:
        return None
    try:
        return decode_cursor(text, kind, LastId).position.id
    except CursorError:
        raise _bad_cursor() from None
