"""Reading the body: any Content-Type, gzip, size limits, and SPEC §7's bad input.

Each kind of bad input gets a clear 4xx (and nothing stored) or is stored whole; none
is a 500.
"""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from tests.app.test_ingest import stored, track
from tests.conftest import TeamKeys

KIB = 1024


def send(client: FlaskClient, team: TeamKeys, data: bytes, **headers: str) -> Any:
    return client.post("/v1/segment", data=data, headers={**team.basic(team.ingest), **headers})


def encoded(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- Content-Type and Content-Encoding -------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",  # analytics.js
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_json_is_read_whatever_the_content_type(
    client: FlaskClient, team: TeamKeys, engine: Engine, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = send(client, team, encoded(track("m1")), **headers)
    assert response.status_code == 200, response.get_json()
    assert [r.message_id for r in stored(engine, team.id)] == ["m1"]


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "x-gzip", " gzip "])
def test_gzipped_body_is_inflated(client: FlaskClient, team: TeamKeys, engine: Engine, encoding: str) -> None:
    body = gzip.compress(encoded({"batch": [track("m1"), track("m2")]}))
    response = send(client, team, body, **{"Content-Encoding": encoding})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 2


def test_identity_encoding_is_plain(client: FlaskClient, team: TeamKeys) -> None:
    assert send(client, team, encoded(track("m1")), **{"Content-Encoding": "identity"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"this is not gzip", "not valid gzip"),
        (gzip.compress(encoded(track("m1")))[:-12], "truncated"),
    ],
)
def test_broken_gzip_is_400(
    client: FlaskClient, team: TeamKeys, engine: Engine, body: bytes, fragment: str
) -> None:
    response = send(client, team, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_gzip"
    assert fragment in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_gzip_bomb_is_413_without_inflating_it(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    # 100 MiB of spaces after a valid event: about 100 KiB compressed.
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = inflater.compress(encoded(track("m1")))
    chunk = b" " * (1024 * 1024)
    for _ in range(100):
        bomb += inflater.compress(chunk)
    bomb += inflater.flush()
    assert len(bomb) < 500 * KIB
    response = send(client, team, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.get_json()["code"] == "request_too_large"
    assert "inflated" in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_unsupported_content_encoding_is_400_naming_gzip(client: FlaskClient, team: TeamKeys) -> None:
    response = send(client, team, encoded(track("m1")), **{"Content-Encoding": "br"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "unsupported_encoding"
    assert "gzip" in response.get_json()["message"]


# --- size limits ---------------------------------------------------------------------------------


def padded(message_id: str, size: int) -> dict[str, Any]:
    """A track event whose compact JSON is exactly `size` bytes."""
    event = track(message_id, properties={"pad": ""})
    base = len(json.dumps(event, separators=(",", ":")))
    event["properties"]["pad"] = "x" * (size - base)
    return event


def test_event_of_exactly_32_kib_is_stored(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    assert send(client, team, encoded(padded("m1", 32 * KIB))).status_code == 200
    assert len(stored(engine, team.id)) == 1


def test_event_over_32_kib_is_413_saying_what_to_trim(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    response = send(client, team, encoded(padded("m1", 32 * KIB + 1)))
    assert response.status_code == 413
    body = response.get_json()
    assert body["code"] == "event_too_large"
    assert "32 KiB" in body["message"] and "properties" in body["message"]
    assert stored(engine, team.id) == []


def test_oversized_event_in_a_batch_is_rejected_alone(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    batch = [track("small"), padded("big", 40 * KIB)]
    response = send(client, team, encoded({"batch": batch}))
    assert response.status_code == 200
    assert [(r["index"], r["messageId"]) for r in response.get_json()["rejected"]] == [(1, "big")]
    assert [r.message_id for r in stored(engine, team.id)] == ["small"]


def test_request_over_500_kib_is_413(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    batch = [padded(f"m{n}", 20 * KIB) for n in range(26)]  # each event fine, the request too big
    response = send(client, team, encoded({"batch": batch}))
    assert response.status_code == 413
    assert response.get_json()["code"] == "request_too_large"
    assert "500 KiB" in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_ten_thousand_properties_is_413_with_a_clear_message(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    event = track("m1", properties={f"p{n}": n for n in range(10_000)})
    response = send(client, team, encoded(event))
    assert response.status_code == 413
    assert "KiB" in response.get_json()["message"]
    assert stored(engine, team.id) == []


def test_a_thousand_properties_within_32_kib_are_stored_whole(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    properties = {f"p{n}": n for n in range(1_000)}
    assert send(client, team, encoded(track("m1", properties=properties))).status_code == 200
    assert stored(engine, team.id)[0].raw["properties"] == properties


# --- malformed bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "invalid_json"),
        (b"   \n", "invalid_json"),
        (b'{"type": "track",', "invalid_json"),
        (b"{'type': 'track'}", "invalid_json"),
        (b'{"type": "track", "userId": "u1", "event": "e", "properties": {"x": NaN}}', "invalid_json"),
        (b'{"type": "track", "userId": "u1", "event": "e", "properties": {"x": Infinity}}', "invalid_json"),
        (b'{"type": "track", "userId": "u1", "event": "e", "properties": {"x": 1e999}}', "invalid_json"),
        (b'{"type": "track", "userId": "u1"} trailing', "invalid_json"),
        (b'{"type": "track", "userId": "u\x00"}', "invalid_json"),  # a raw control character
        (b'{"type": "track", "userId": "\xff\xfe"}', "invalid_encoding"),
        (b'{"type": "track", "userId": "\xed\xa0\x80"}', "invalid_encoding"),  # an encoded surrogate
        ('{"type": "page", "userId": "u"}'.encode("utf-16"), "invalid_encoding"),
    ],
)
def test_malformed_body_is_400_saying_what_is_wrong(
    client: FlaskClient, team: TeamKeys, engine: Engine, data: bytes, code: str
) -> None:
    response = send(client, team, data)
    assert response.status_code == 400
    assert response.get_json()["code"] == code
    assert response.get_json()["message"].startswith("The body")
    assert stored(engine, team.id) == []


def test_number_with_too_many_digits_is_400_in_plain_words(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    data = b'{"type": "track", "userId": "u1", "event": "e", "properties": {"x": ' + b"9" * 5000 + b"}}"
    response = send(client, team, data)
    assert response.status_code == 400
    assert "too many digits" in response.get_json()["message"]
    assert "sys." not in response.get_json()["message"]


def test_utf8_byte_order_mark_is_accepted(client: FlaskClient, team: TeamKeys) -> None:
    assert send(client, team, b"\xef\xbb\xbf" + encoded(track("m1"))).status_code == 200


@pytest.mark.parametrize("body", ["track", 42, None, True])
def test_body_that_is_not_an_object_is_400(client: FlaskClient, team: TeamKeys, body: Any) -> None:
    response = send(client, team, encoded(body))
    assert response.status_code == 400
    assert "must be a JSON object" in response.get_json()["message"]


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for n in range(levels):
        value = {"k": value} if n % 2 else [value]
    return value


def test_properties_nested_within_the_limit_are_stored_whole(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    event = track("m1", properties={"deep": nested(61)})  # event, properties, deep: 63 levels
    assert send(client, team, encoded(event)).status_code == 200
    assert stored(engine, team.id)[0].raw["properties"] == event["properties"]


@pytest.mark.parametrize("levels", [70, 900, 5_000, 100_000])
def test_deeply_nested_body_is_400_too_deep(
    client: FlaskClient, team: TeamKeys, engine: Engine, levels: int
) -> None:
    data = b'{"type": "track", "userId": "u1", "event": "e", "properties": {"x": '
    data += b"[" * levels + b"]" * levels + b"}}"
    response = send(client, team, data)
    assert response.status_code in (400, 413)
    assert response.get_json()["code"] in ("too_deep", "request_too_large")
    assert stored(engine, team.id) == []


def test_deep_event_in_a_batch_is_rejected_alone(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    batch = [track("shallow"), track("deep", properties={"x": nested(80)})]
    response = send(client, team, encoded({"batch": batch}))
    assert response.status_code == 200
    assert response.get_json()["rejected"][0]["errors"]["_event"][0].startswith("The event nests")
    assert [r.message_id for r in stored(engine, team.id)] == ["shallow"]


# --- text JSON allows and Postgres refuses ---------------------------------------------------------


def test_nul_characters_are_stored_as_replacement_characters(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    data = (
        b'{"type": "track", "userId": "u\\u0000", "event": "e\\u0000", "messageId": "m1",'
        b' "properties": {"k\\u0000ey": ["a\\u0000b", {"x": "\\u0000"}]}}'
    )
    response = send(client, team, data)
    assert response.status_code == 200, response.get_json()
    [row] = stored(engine, team.id)
    assert (row.user_id, row.event_name) == ("u\ufffd", "e\ufffd")
    assert row.raw["properties"] == {"k\ufffdey": ["a\ufffdb", {"x": "\ufffd"}]}


def test_lone_surrogates_are_stored_as_replacement_characters(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    data = b'{"type": "page", "userId": "\\ud800x", "messageId": "m1", "properties": {"\\udfff": "\\uDBFF"}}'
    response = send(client, team, data)
    assert response.status_code == 200, response.get_json()
    [row] = stored(engine, team.id)
    assert row.user_id == "\ufffdx"
    assert row.raw["properties"] == {"\ufffd": "\ufffd"}


def test_escaped_surrogate_pairs_and_odd_unicode_are_stored_exactly(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    odd = "\U0001f600 \u202e\u200b\ufeff e\u0301 \U0010ffff \u2028 \x7f \\u0000"
    data = b'{"type": "page", "userId": "\\ud83d\\ude00", "messageId": "m1", "name": ' + encoded(odd) + b"}"
    response = send(client, team, data)
    assert response.status_code == 200, response.get_json()
    [row] = stored(engine, team.id)
    assert row.user_id == "\U0001f600"
    assert row.raw["name"] == odd and row.event_name == odd


# --- timestamps and ids at the edges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        (1709294400, datetime(2024, 3, 1, 12, tzinfo=UTC)),
        (1709294400000, datetime(2024, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_extreme_but_real_timestamps_are_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine, timestamp: Any, expected: datetime
) -> None:
    response = send(client, team, encoded(track("m1", timestamp=timestamp)))
    assert response.status_code == 200, response.get_json()
    assert stored(engine, team.id)[0].event_time == expected


@pytest.mark.parametrize(
    "timestamp",
    [
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "+275760-09-13T00:00:00.000Z",
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-03-01T25:00:00Z",
        "2024-03-01T12:00:00+24:00",
        "2024-01-01" + " " * 5000 + "x",
        "tomorrow",
        10**30,
        -(10**30),
        1e300,
        True,
        [],
        {},
    ],
)
def test_impossible_timestamp_is_400_naming_timestamp(
    client: FlaskClient, team: TeamKeys, engine: Engine, timestamp: Any
) -> None:
    response = send(client, team, encoded(track("m1", timestamp=timestamp)))
    assert response.status_code == 400, response.get_json()
    assert "timestamp" in response.get_json()["errors"]
    assert stored(engine, team.id) == []


@pytest.mark.parametrize("original", ["0000-01-01", "2024-02-30T00:00:00Z", 10**30, {"t": 1}, "x" * 10_000])
def test_unreadable_original_timestamp_falls_back_and_the_event_is_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine, original: Any
) -> None:
    event = track("m1", originalTimestamp=original, receivedAt="2024-03-01T12:00:00Z")
    assert send(client, team, encoded(event)).status_code == 200
    assert stored(engine, team.id)[0].event_time == datetime(2024, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "status", "kept"),
    [
        ("text", 200, "text"),
        ("", 400, None),  # no identity left
        (0, 200, "0"),
        (-1, 200, "-1"),
        (2**63, 200, str(2**63)),
        (10**300, 400, None),  # more than 255 characters
        (3.25, 200, "3.25"),
        (1e20, 200, "100000000000000000000"),
        (-0.0, 200, "0"),
        (True, 400, None),
        (False, 400, None),
        (None, 400, None),
        ([], 400, None),
        (["u1"], 400, None),
        ({}, 400, None),
        ({"id": "u1"}, 400, None),
    ],
)
def test_user_id_of_every_json_type_is_stored_as_a_string_or_refused(
    client: FlaskClient, team: TeamKeys, engine: Engine, value: Any, status: int, kept: str | None
) -> None:
    response = send(client, team, encoded({"type": "identify", "userId": value}))
    assert response.status_code == status, response.get_json()
    rows = stored(engine, team.id)
    if status == 200:
        assert [r.user_id for r in rows] == [kept]
    else:
        assert "userId" in response.get_json()["errors"]
        assert rows == []
