"""The one cursor codec: what it makes it reads back; anything else is a CursorError, bounded."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from schemas.cursors import (
    MAX_CURSOR_TEXT,
    CursorError,
    FeedPosition,
    InstantPosition,
    LastId,
    ListOffset,
    Position,
    decode_cursor,
    encode_cursor,
)

WHEN = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
BIG = 2**63 - 1


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def wire(*values: object) -> str:
    """A cursor's text as the API has always written it: base64 of the compact JSON array."""
    return b64(json.dumps(list(values), separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("kind", "order", "position", "text"),
    [
        ("feed", "asc", FeedPosition(WHEN, 3, 9), wire("feed", "asc", WHEN.isoformat(), 3, 9)),
        ("customers", "desc", InstantPosition(WHEN, BIG), wire("customers", "desc", WHEN.isoformat(), BIG)),
        ("members", "asc", InstantPosition(WHEN, 7), wire("members", "asc", WHEN.isoformat(), 7)),
        ("traits", "asc", ListOffset(0), wire("traits", "asc", 0)),
        ("k", None, LastId(41), wire("k", 41)),
        ("rejections", None, LastId(5), wire("rejections", 5)),
    ],
)
def test_a_cursor_reads_back_what_it_holds_in_the_format_handed_out_before(
    kind: str, order: str | None, position: Position, text: str
) -> None:
    """Every cursor a client may hold still reads: the text is what the two old codecs wrote."""
    assert encode_cursor(kind, position, order) == text
    cursor = decode_cursor(text, kind, type(position))  # type: ignore[type-var]
    assert (cursor.kind, cursor.order, cursor.position) == (kind, order, position)
    assert len(text) < 120


def test_an_ordered_position_needs_an_order_and_an_id_takes_none() -> None:
    with pytest.raises(ValueError):
        encode_cursor("feed", FeedPosition(WHEN, 1, 2))
    with pytest.raises(ValueError):
        encode_cursor("k", LastId(1), "desc")


@pytest.mark.parametrize(
    "text",
    [
        b64(b"[" * 100_000 + b"]" * 100_000),  # deep nesting: a RecursionError once
        b64(b'["k",[[1]]]'),
        b64(b'["k",{"a":1}]'),
        "A" * (MAX_CURSOR_TEXT + 1),
        b64(b'["k",' + b"1," * 400 + b"1]"),  # over-long once encoded
        "é" + wire("k", 1),
        b64(b"not json"),
        b64(b'{"k":1}'),
        b64(b"[]"),
        b64(b"[1,2]"),
        "%%%",
        wire("k", "41"),
        wire("k", 1, 2),
        wire("k", 0),
        wire("k", True),
    ],
)
def test_anything_else_is_a_cursor_error(text: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(text, "k", LastId)


def test_a_cursor_for_another_list_is_refused() -> None:
    with pytest.raises(CursorError):
        decode_cursor(encode_cursor("k", LastId(1)), "a", LastId)


@pytest.mark.parametrize(
    ("values", "position"),
    [
        (["feed", "sideways", "2024-03-01T12:00:00+00:00", 1, 2], FeedPosition),
        (["feed", "asc", "2024-03-01T12:00:00", 1, 2], FeedPosition),  # no offset
        (["feed", "asc", "2024-03-01T12:00:00+00:00", True, 2], FeedPosition),
        (["feed", "asc", "2024-03-01T12:00:00+00:00", 2**63, 2], FeedPosition),
        (["feed", "asc", "2024-03-01T12:00:00+00:00", 1], FeedPosition),
        (["members", "asc", "2024-03-01T12:00:00+00:00", 1, 2], InstantPosition),
        (["groups", "asc", "2024-03-01T12:00:00+00:00", 1], ListOffset),
        (["groups", "asc", -1], ListOffset),
        (["customers", "2024-03-01T12:00:00+00:00", 1], InstantPosition),  # no order
    ],
)
def test_a_read_cursor_holds_its_own_keyset_only(values: list[object], position: type[Position]) -> None:
    with pytest.raises(CursorError):
        decode_cursor(wire(*values), str(values[0]), position)  # type: ignore[type-var]
