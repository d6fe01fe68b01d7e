"""Lenient timestamps: every form Segment and its SDKs send parses; nothing else does, quickly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.timestamps import TimestampError, parse_timestamp

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:00:00Z", T0),
        ("2024-03-01T12:00:00.000Z", T0),
        ("2024-03-01T12:00:00.123456789Z", T0.replace(microsecond=123456)),
        ("2024-03-01T12:00:00,5Z", T0.replace(microsecond=500000)),
        ("2024-03-01T13:00:00+01:00", T0),
        ("2024-03-01T13:00:00+0100", T0),
        ("2024-03-01T13:00:00+01", T0),
        ("2024-03-01T06:30:00-05:30", T0),
        ("2024-03-01T12:00:00", T0),  # no zone: UTC
        ("2024-03-01t12:00:00z", T0),
        ("2024-03-01 12:00:00", T0),
        ("2024-3-1T12:0:0Z", T0),  # unpadded fields
        ("2024-03-01T12:00Z", T0),
        ("2024-03-01", T0.replace(hour=0)),
        ("  2024-03-01T12:00:00Z  ", T0),
        ("2024-03-01T12:00:00 Z", T0),
        ("2024-03-01 12:00:00 +0000 UTC", T0),
        # Go's time.Time.String(), in the originalTimestamp of Segment's delete events.
        (
            "2020-05-09 23:54:49.209808489 +0000 UTC m=+70366.298768264",
            datetime(2020, 5, 9, 23, 54, 49, 209808, UTC),
        ),
        ("2024-03-01 13:00:00 +0100 UTC", T0),
        (1709294400, T0),  # epoch seconds
        (1709294400.5, T0.replace(microsecond=500000)),
        (1709294400000, T0),  # epoch milliseconds
    ],
)
def test_segment_timestamp_forms_parse_to_utc(text: object, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2024-13-01",
        "2024-02-30T00:00:00Z",
        "2024-03-01T24:00:00Z",
        "2024-03-01T12:60:00Z",
        "2024-03-01T12:00:00+24:00",
        "2024-03-01T12:00:00+01:60",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
        "+275760-09-13T00:00:00.000Z",
        "٢٠٢٤-٠٣-٠١",  # digits of another script
        "2024-03-01T12:00:00Z trailing",
        "2024-03-01" + " " * 90 + "x",
        "2024-03-01" + " " * 100_000 + "x",
        10**30,
        -(10**30),
        10**400,
        1e300,
        True,
        None,
        [],
        {},
    ],
)
def test_impossible_timestamps_raise_timestamp_error(value: object) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)


def test_the_error_says_what_was_wrong() -> None:
    with pytest.raises(TimestampError, match="not a real date"):
        parse_timestamp("2024-02-30")
    with pytest.raises(TimestampError, match="an object"):
        parse_timestamp({})


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(-23 * 60, 23 * 60),
    separator=st.sampled_from(["T", " "]),
)
def test_any_iso_moment_with_any_offset_round_trips(
    moment: datetime, offset_minutes: int, separator: str
) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert parse_timestamp(aware.isoformat(sep=separator)) == aware


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_text_parses_or_raises_timestamp_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except TimestampError:
        return
    assert parsed.tzinfo == UTC
