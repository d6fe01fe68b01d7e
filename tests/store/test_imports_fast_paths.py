"""The import's fast paths give what the paths they shortcut give (no database needed).

(Decoding is `app.ingest.body.parse_json` itself; tests/app/test_ingest_json.py holds its
orjson and stdlib paths to one answer.)
- `app.imports.importer.prepare_line` (one event, `schemas.batch.prepare_one`) and
  `prepare_events([item])`, the ingest path: the same prepared event, or the same refusal;
- `schemas.quick_load.quick_timestamp` (`datetime.fromisoformat`) and `parse_timestamp`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from app.errors import ApiError
from app.imports.importer import LineRefused, prepare_line
from app.ingest.body import parse_json
from schemas.batch import Scan, prepare_events
from schemas.quick_load import quick_timestamp
from schemas.timestamps import TimestampError, parse_timestamp

RECEIVED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "group", "alias", "Track", "x"])},
    optional={
        "userId": st.text(max_size=4) | st.integers(),
        "anonymousId": st.text(max_size=4),
        "messageId": st.text(max_size=4) | st.integers(min_value=0, max_value=10**21),
        "event": st.text(max_size=4),
        "groupId": st.text(max_size=4),
        "previousId": st.text(max_size=4),
        "timestamp": st.sampled_from(["2024-03-01T12:00:00.123Z", "2024-03-01 12:00", "", "x"]),
        "properties": values,
        "traits": values,
        "context": values,
    },
)


FRESH_ID = re.compile(r"derived-[0-9a-f]{32}")
CONTENT_ID = re.compile(r"derived-[0-9a-f]{40}")


def exactly(value: Any) -> str:
    """The value as JSON text: 10**20 and 1e20 compare equal in Python, not here."""
    return json.dumps(value, sort_keys=True)


def prepared_as_ingest(line: bytes) -> tuple[str, Any]:
    scan = Scan.of_bytes(line)
    try:
        item = parse_json(line, scan)
    except ApiError as error:  # the import reports the line's refusal without the body's `errors`
        return "refused", (error.code, error.message, {})
    batch = prepare_events([item], RECEIVED, scan=scan)
    if batch.rejected:
        rejected = batch.rejected[0].error
        return "refused", (rejected.code, rejected.message, rejected.errors)
    return "ok", batch.events[0]


def prepared_as_import(line: bytes) -> tuple[str, Any]:
    try:
        return "ok", prepare_line(line, RECEIVED)[1]
    except LineRefused as refused:
        error = refused.error
        return "refused", (error.code, error.message, error.errors)


@given(event=events)
def test_a_line_is_prepared_as_ingest_prepares_it(event: dict[str, Any]) -> None:
    line = json.dumps(event).encode()
    fast, slow = prepared_as_import(line), prepared_as_ingest(line)
    if slow[0] == "ok" and FRESH_ID.fullmatch(slow[1].message_id):
        # The one deliberate difference: with nothing to tell two sends apart, ingest gives
        # a fresh id; an import's line is a record read again on every run, so its id comes
        # from its content (a rerun dedupes it).
        assert fast[0] == "ok" and CONTENT_ID.fullmatch(fast[1].message_id)
        fast = ("ok", replace(fast[1], message_id=slow[1].message_id))
        fast[1].raw["messageId"] = slow[1].message_id
    assert fast == slow
    if fast[0] == "ok":
        assert exactly(fast[1].raw) == exactly(slow[1].raw) and fast[1].tiebreak == slow[1].tiebreak


stamps = st.builds(
    lambda day, fraction, zone: day.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567", "."]),
    st.sampled_from(
        ["Z", "z", "+00:00", "-00:00", "+05:30", "-11:45", "+23:59", "+24:00", "+05:60", "", "+05"]
    ),
)


@given(stamp=stamps | st.text(max_size=40))
@example(stamp="0001-01-01T00:00:00+01:00")
@example(stamp="9999-12-31T23:59:59-01:00")
@example(stamp="2024-02-30T00:00:00Z")
def test_the_quick_timestamp_is_parse_timestamp_or_leaves_it_to_it(stamp: str) -> None:
    quick = quick_timestamp(stamp)
    if quick is None:
        return
    try:
        slow = parse_timestamp(stamp)
    except TimestampError:
        raise AssertionError(f"{stamp!r}: the quick path read what parse_timestamp refuses") from None
    assert quick == slow and quick.tzinfo is UTC
