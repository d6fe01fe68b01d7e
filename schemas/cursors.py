"""Opaque paging cursors: what a list hands back as `next_cursor`, and reads again, safely.

A cursor is URL-safe base64 (no padding) of a flat JSON array of scalars, the first
being what the cursor is for (`["feed", "desc", "2024-...", 7, 12]`, `["keys", 41]`).
A caller can send anything as a cursor, so reading one is bounded before any parsing:
over `MAX_CURSOR_TEXT` characters, more than a few brackets (nesting), or anything but a
flat array of strings, numbers and booleans, is a `CursorError` (a 400 at the edge),
never a RecursionError or a 500. No Flask, no database.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TypeGuard

# Ours are under 120 characters; a few times that leaves room without reading megabytes.
MAX_CURSOR_TEXT = 512
_MAX_BRACKETS = 2  # one array; a second bracket is already nesting we never make
_BIGINT = (-(2**63), 2**63 - 1)

Scalar = str | int | float | bool | None

CURSOR_ERROR = "Not a cursor from this list; start again without it."


class CursorError(ValueError):
    """Not a cursor we made (or made for another list): the caller starts again."""

    def __init__(self, message: str = CURSOR_ERROR):
        super().__init__(message)


def encode_cursor(kind: str, *values: Scalar) -> str:
    """The opaque text of a cursor for the list `kind`, holding `values`."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kind: str | None = None) -> tuple[str, list[Scalar]]:
    """(kind, values) of a cursor `encode_cursor` made, or CursorError for anything else.

    With `kind`, a cursor made for another list is refused too.
    """
    if len(text) > MAX_CURSOR_TEXT or not text.isascii():
        raise CursorError()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise CursorError() from None
    if raw.count(b"[") + raw.count(b"{") > _MAX_BRACKETS:
        raise CursorError()
    try:
        decoded = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise CursorError() from None
    if not isinstance(decoded, list) or not decoded or not isinstance(decoded[0], str):
        raise CursorError()
    found, *values = decoded
    if kind is not None and found != kind:
        raise CursorError()
    if not all(value is None or isinstance(value, str | int | float | bool) for value in values):
        raise CursorError()
    return found, values


def is_bigint(value: object) -> TypeGuard[int]:
    """A Postgres bigint (an id, a tiebreak); bool is an int in Python, and never one."""
    return isinstance(value, int) and not isinstance(value, bool) and _BIGINT[0] <= value <= _BIGINT[1]
