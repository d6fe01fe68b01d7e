"""Paging: the one cursor codec of every list, and the positions a cursor holds.

A cursor is opaque to callers: URL-safe base64 (no padding) of a flat JSON array of
scalars, `[kind, order, ...position]` for the read API's lists (`["feed", "desc",
"2024-...", 7, 12]`) and `[kind, ...position]` for the lists paged by id
(`["k", 41]`), the position being where the last page stopped (the sort values of its
last item: a keyset, an offset, or an id). `encode_cursor` and `decode_cursor` are the
only two ways in and out; `CursorArgument` reads one from a query string.

A caller can send anything as a cursor, so reading one is bounded before any parsing:
over `MAX_CURSOR_TEXT` characters, more than a few brackets (nesting), anything but a
flat array of strings, numbers and booleans, or a position of the wrong shape, is a
`CursorError` (a 400 at the edge, `invalid_cursor`), never a RecursionError or a 500;
so is a cursor made for another list or order. No Flask, no database.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Self, TypeGuard, TypeVar

from marshmallow import ValidationError, fields

# Ours are under 120 characters; a few times that leaves room without reading megabytes.
MAX_CURSOR_TEXT = 512
_MAX_BRACKETS = 2  # one array; a second bracket is already nesting we never make
_BIGINT = (-(2**63), 2**63 - 1)
ORDERS = ("desc", "asc")

Scalar = str | int | float | bool | None

CURSOR_ERROR = "Not a cursor from this list; start again without it."


class CursorError(ValueError):
    """Not a cursor we made (or made for another list): the caller starts again."""

    def __init__(self, message: str = CURSOR_ERROR):
        super().__init__(message)


def is_bigint(value: object) -> TypeGuard[int]:
    """A Postgres bigint (an id, a tiebreak); bool is an int in Python, and never one."""
    return isinstance(value, int) and not isinstance(value, bool) and _BIGINT[0] <= value <= _BIGINT[1]


def _instant(value: Scalar) -> datetime:
    if not isinstance(value, str):
        raise CursorError()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CursorError() from None
    if moment.tzinfo is None:
        raise CursorError()
    return moment


def _bigints(values: list[Scalar], count: int) -> list[int]:
    keys = [value for value in values if is_bigint(value)]
    if len(values) != count or len(keys) != count:
        raise CursorError()
    return keys


# -- positions: where a page stopped ------------------------------------------------


@dataclass(frozen=True)
class FeedPosition:
    """A place in a timeline: the (event time, tiebreak, id) of the last item read."""

    ORDERED: ClassVar[bool] = True
    event_time: datetime
    tiebreak: int
    id: int

    def values(self) -> tuple[Scalar, ...]:
        return self.event_time.isoformat(), self.tiebreak, self.id

    @classmethod
    def read(cls, values: list[Scalar]) -> Self:
        if len(values) != 3:
            raise CursorError()
        return cls(_instant(values[0]), *_bigints(values[1:], 2))


@dataclass(frozen=True)
class InstantPosition:
    """A place in a list sorted by (an instant, an id): the customers by (last_seen desc,
    id desc), a group's members by (joined_at, customer id)."""

    ORDERED: ClassVar[bool] = True
    at: datetime
    id: int

    def values(self) -> tuple[Scalar, ...]:
        return self.at.isoformat(), self.id

    @classmethod
    def read(cls, values: list[Scalar]) -> Self:
        if len(values) != 2:
            raise CursorError()
        return cls(_instant(values[0]), *_bigints(values[1:], 1))


@dataclass(frozen=True)
class ListOffset:
    """A place in a short list that has no keyset to page by (its sort values are long
    text: trait keys, groupIds): how many items came before. Such a list can shift while
    it is paged (docs/read-api.md)."""

    ORDERED: ClassVar[bool] = True
    offset: int

    def values(self) -> tuple[Scalar, ...]:
        return astuple(self)

    @classmethod
    def read(cls, values: list[Scalar]) -> Self:
        (offset,) = _bigints(values, 1)
        if offset < 0:
            raise CursorError()
        return cls(offset)


@dataclass(frozen=True)
class LastId:
    """A place in a list paged by id (keys, their audit, set-aside events, refusals): the
    id of the last item shown. Such a list has one order, so its cursor names none."""

    ORDERED: ClassVar[bool] = False
    id: int

    def values(self) -> tuple[Scalar, ...]:
        return astuple(self)

    @classmethod
    def read(cls, values: list[Scalar]) -> Self:
        (last,) = _bigints(values, 1)
        if last <= 0:
            raise CursorError()
        return cls(last)


Position = FeedPosition | InstantPosition | ListOffset | LastId
P = TypeVar("P", FeedPosition, InstantPosition, ListOffset, LastId)


@dataclass(frozen=True)
class Cursor(Generic[P]):
    """A decoded cursor: which list it pages, in which order (None for a list paged by
    id), and where it stopped."""

    kind: str
    order: str | None
    position: P


# -- the codec ----------------------------------------------------------------------


def encode_cursor(kind: str, position: Position, order: str | None = None) -> str:
    """The opaque text of a cursor for the list `kind` (in `order`, for an ordered list)."""
    if position.ORDERED != (order is not None):
        raise ValueError(
            f"{type(position).__name__} cursors {'need' if position.ORDERED else 'take no'} order"
        )
    head: list[Scalar] = [kind] if order is None else [kind, order]
    raw = json.dumps([*head, *position.values()], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kind: str, position: type[P]) -> Cursor[P]:
    """The cursor `encode_cursor` made for the list `kind`, or CursorError for anything else."""
    found, values = _read(text)
    if found != kind:
        raise CursorError()
    order: str | None = None
    if position.ORDERED:
        if not values or values[0] not in ORDERS:
            raise CursorError()
        order, values = str(values[0]), values[1:]
    return Cursor(kind, order, position.read(values))


def _read(text: str) -> tuple[str, list[Scalar]]:
    """(kind, values) of a cursor's text, bounded: CursorError for anything but a flat array."""
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
    if not all(value is None or isinstance(value, str | int | float | bool) for value in values):
        raise CursorError()
    return found, values


class CursorArgument(fields.String, Generic[P]):
    """`cursor`: a `next_cursor` this API returned for the same list; a `Cursor` once loaded."""

    def __init__(self, kind: str, position: type[P], **kwargs: Any):
        super().__init__(
            metadata={"description": "The `next_cursor` of the previous page; omit it for the first."},
            **kwargs,
        )
        self.kind = kind
        self.position: type[P] = position

    # A string on the wire (and in the OpenAPI document), a Cursor once loaded.
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Cursor[P]:  # type: ignore[override]
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text, self.kind, self.position)
        except CursorError as error:
            raise ValidationError(str(error)) from None
