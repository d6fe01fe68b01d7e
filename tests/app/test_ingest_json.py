"""The body decoder's two paths agree: orjson for plain bodies, the stdlib for the rest.

`parse_json` hands plain bodies to orjson and everything else (and whatever orjson
refuses) to the stdlib path, which words the errors. For any JSON text, and for text
that is nearly JSON, both paths give the same value or both refuse it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ApiError
from app.ingest.body import parse_json
from schemas.batch import Scan

# Every body walked by the slow path: parse_json then never takes the orjson one.
STDLIB_ONLY = Scan(unstorable_text=True, deep=True, large=True)
PLAIN = Scan(unstorable_text=False, deep=False, large=False)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def outcome(data: bytes, scan: Scan) -> tuple[str, Any]:
    try:
        return "value", parse_json(data, scan)
    except ApiError as error:
        return "refused", error.code


def same(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    # repr tells -0.0 from 0.0 and 1 from 1.0, which == would not.
    return left[0] == right[0] and repr(left[1]) == repr(right[1])


@settings(max_examples=150, deadline=None)
@given(values, st.booleans())
def test_any_json_value_decodes_the_same_on_both_paths(value: Any, ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert same(outcome(data, PLAIN), outcome(data, STDLIB_ONLY))


@settings(max_examples=150, deadline=None)
@given(values, st.integers(min_value=0), st.binary(max_size=3))
def test_damaged_json_is_refused_or_decoded_the_same_on_both_paths(value: Any, at: int, junk: bytes) -> None:
    data = json.dumps(value).encode()
    cut = at % (len(data) + 1)
    damaged = data[:cut] + junk + data[cut:]
    assert same(outcome(damaged, PLAIN), outcome(damaged, STDLIB_ONLY))


def test_a_byte_order_mark_and_big_integers_decode_as_the_stdlib_does() -> None:
    for data in (b'\xef\xbb\xbf{"a": 1}', b'{"id": 123456789012345678901234567890}', b"[-0, 1e308, 0.1]"):
        assert same(outcome(data, PLAIN), outcome(data, STDLIB_ONLY))
