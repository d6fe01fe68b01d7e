"""The cursor codec: what it makes it reads back; anything else is a CursorError, bounded."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from schemas.api import CustomerPosition, FeedPosition, decode_cursor
from schemas.api import encode_cursor as encode_read_cursor
from schemas.cursors import MAX_CURSOR_TEXT, CursorError, encode_cursor
from schemas.cursors import decode_cursor as decode_text


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_cursor_reads_back_what_it_holds() -> None:
    assert decode_text(encode_cursor("keys", 41)) == ("keys", [41])
    when = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    cursor = decode_cursor(encode_read_cursor("feed", "asc", FeedPosition(when, 3, 9)))
    assert (cursor.kind, cursor.order, cursor.position) == ("feed", "asc", FeedPosition(when, 3, 9))
    assert len(encode_read_cursor("customers", "desc", CustomerPosition(when, 2**63 - 1))) < 120


@pytest.mark.parametrize(
    "text",
    [
        b64(b"[" * 100_000 + b"]" * 100_000),  # deep nesting: a RecursionError once
        b64(b'["keys",[[1]]]'),
        b64(b'["keys",{"a":1}]'),
        "A" * (MAX_CURSOR_TEXT + 1),
        b64(b'["keys",' + b"1," * 400 + b"1]"),  # over-long once encoded
        "é" + encode_cursor("keys", 1),
        b64(b"not json"),
        b64(b'{"keys":1}'),
        b64(b"[]"),
        b64(b"[1,2]"),
        "%%%",
    ],
)
def test_anything_else_is_a_cursor_error(text: str) -> None:
    with pytest.raises(CursorError):
        decode_text(text)


def test_a_cursor_for_another_list_is_refused() -> None:
    with pytest.raises(CursorError):
        decode_text(encode_cursor("keys", 1), "audit")


@pytest.mark.parametrize(
    "values",
    [
        ["feed", "sideways", "2024-03-01T12:00:00+00:00", 1, 2],
        ["feed", "asc", "2024-03-01T12:00:00", 1, 2],  # no offset
        ["feed", "asc", "2024-03-01T12:00:00+00:00", True, 2],
        ["feed", "asc", "2024-03-01T12:00:00+00:00", 2**63, 2],
        ["members", "asc", "2024-03-01T12:00:00+00:00", 1, 2],
        ["groups", "asc", "2024-03-01T12:00:00+00:00", 1],
    ],
)
def test_a_read_cursor_holds_its_own_keyset_only(values: list[object]) -> None:
    with pytest.raises(ValueError):
        decode_cursor(encode_cursor(*values))  # type: ignore[arg-type]
