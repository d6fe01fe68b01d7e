"""The team's ingestion debugger: refusals of HTTP ingest and imports, listed and counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from store.rejections import MAX_KEPT, MAX_PER_CALL
from tests.conftest import TeamKeys

KEY_LIKE = "tlk_" + "A1b2C3d4" * 4  # our key format, in a payload where it does not belong


def listed(client: FlaskClient, team: TeamKeys, query: str = "") -> Any:
    response = client.get(f"/api/v1/ingest/rejections{query}", headers=team.bearer(team.read))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_refusals_of_http_ingest_and_of_an_import_are_listed_with_their_reason_and_never_a_key(
    app: Flask, client: FlaskClient, team: TeamKeys, tmp_path: Path
) -> None:
    bad = {"type": "track", "messageId": "http-bad", "userId": "u1", "writeKey": team.ingest,
           "properties": {"note": f"pasted {KEY_LIKE} here", "writekey": "x"}}  # fmt: skip
    batch = {"batch": [bad, {"type": "track", "userId": "u1", "event": "Ok", "messageId": "ok1"}]}
    response = client.post("/v1/batch", json=batch, headers=team.basic(team.ingest))
    assert response.status_code == 200 and response.get_json()["accepted"] == 1
    line = {"type": "identify", "messageId": "file-bad", "traits": {"k": team.ingest}}
    path = tmp_path / "day.jsonl"
    path.write_text(json.dumps(line) + "\n")
    result = app.test_cli_runner().invoke(
        args=["events", "import", "--team", str(team.id), "--report", str(tmp_path / "r.jsonl"), str(path)]
    )
    assert result.exit_code == 1

    page = listed(client, team)
    imported, http = page["data"]  # newest first
    assert http["source"] == "http" and http["route"] == "/v1/batch"
    assert http["status"] == 400 and http["code"] == "invalid_event"
    assert "event" in http["message"] and http["message_id"] == "http-bad" and http["type"] == "track"
    assert imported["source"] == "import" and imported["route"] == str(path) and imported["line"] == 1
    assert imported["code"] == "invalid_event" and "userId or anonymousId" in imported["message"]
    assert imported["message_id"] == "file-bad"
    everything = json.dumps(page)
    assert team.ingest not in everything and KEY_LIKE not in everything
    assert "writeKey" not in everything and "writekey" not in everything
    assert "[redacted]" in http["preview"] and '"u1"' in http["preview"]


def test_a_refused_request_is_kept_once_with_a_preview_of_its_body(
    client: FlaskClient, team: TeamKeys
) -> None:
    body = b'{"type": "track", "writeKey": "' + team.ingest.encode() + b'", "userId": '
    response = client.post("/v1/segment", data=body, headers=team.basic(team.ingest))
    assert response.status_code == 400
    (kept,) = listed(client, team)["data"]
    assert kept["code"] == "invalid_json" and kept["type"] is None and kept["message_id"] is None
    assert team.ingest not in kept["preview"] and '"userId"' in kept["preview"]
    # A batch whose every event is invalid: each event is kept, not the request beside them.
    response = client.post("/v1/batch", json={"batch": [{"type": "track"}, {"type": "page"}]},
                           headers=team.basic(team.ingest))  # fmt: skip
    assert response.status_code == 400
    codes = [r["code"] for r in listed(client, team)["data"]]
    assert codes == ["invalid_event", "invalid_event", "invalid_json"]


def test_a_refusal_without_a_known_team_is_not_kept(client: FlaskClient, team: TeamKeys) -> None:
    response = client.post("/v1/segment", json={"type": "track"}, headers=team.basic("tlk_" + "x" * 32))
    assert response.status_code == 401
    assert listed(client, team)["data"] == []


def test_summary_counts_accepted_duplicates_and_refused_per_type_and_code(
    client: FlaskClient, team: TeamKeys
) -> None:
    events = [{"type": "track", "userId": "u", "event": "E", "messageId": f"s{n}"} for n in range(3)]
    events.append({"type": "identify", "userId": "u", "messageId": "i1"})
    assert (
        client.post("/v1/batch", json={"batch": events}, headers=team.basic(team.ingest)).status_code == 200
    )
    again = {"batch": events[:3]}  # all duplicates, one type
    assert client.post("/v1/batch", json=again, headers=team.basic(team.ingest)).status_code == 200
    refused = {"batch": [{"type": "track", "userId": "u"}, {"type": "Nope", "userId": "u"}]}
    assert client.post("/v1/batch", json=refused, headers=team.basic(team.ingest)).status_code == 400

    response = client.get("/api/v1/ingest/summary", headers=team.bearer(team.read))
    assert response.status_code == 200
    summary = response.get_json()
    for window in ("last_24h", "last_7d"):
        counts = summary[window]
        assert (counts["accepted"], counts["duplicates"], counts["refused"]) == (4, 3, 2)
        assert counts["by_type"]["track"] == {"accepted": 3, "duplicates": 3, "refused": 1, "expired": 0}
        assert counts["by_type"]["identify"] == {"accepted": 1, "duplicates": 0, "refused": 0, "expired": 0}
        assert counts["refused_by_code"] == {"invalid_event": {"track": 1}, "unsupported_type": {"other": 1}}


def test_summary_windows_leave_out_older_hours(client: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with engine.begin() as connection:
        for hours_ago, n in ((2, 5), (30, 7), (24 * 9, 11)):
            connection.execute(
                text("INSERT INTO ingest_counts VALUES (:t, :h, 'import', 'track', 'accepted', '', :n)"),
                {"t": team.id, "h": now - timedelta(hours=hours_ago), "n": n},
            )
    summary = client.get("/api/v1/ingest/summary", headers=team.bearer(team.read)).get_json()
    assert summary["last_24h"]["accepted"] == 5
    assert summary["last_7d"]["accepted"] == 12


def test_a_flood_of_junk_is_counted_but_kept_only_up_to_the_cap(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    size = MAX_PER_CALL + 50  # each request stores 100 of its 150 refusals, and counts them all
    junk = {"batch": [{"type": "track", "userId": "u", "messageId": f"j{n}"} for n in range(size)]}
    rounds = MAX_KEPT // MAX_PER_CALL + 2
    for _ in range(rounds):
        response = client.post("/v1/batch", json=junk, headers=team.basic(team.ingest))
        assert response.status_code == 400
    with engine.connect() as connection:
        kept = connection.execute(
            text("SELECT count(*) FROM ingest_rejections WHERE team_id = :t"), {"t": team.id}
        ).scalar_one()
    assert kept == MAX_KEPT
    summary = client.get("/api/v1/ingest/summary", headers=team.bearer(team.read)).get_json()
    assert summary["last_24h"]["refused"] == rounds * size
    newest = listed(client, team, "?limit=1")["data"][0]
    assert newest["message_id"] == f"j{size - 1}"


def test_pages_follow_the_cursor_and_filters_apply(client: FlaskClient, team: TeamKeys) -> None:
    for n in range(5):
        client.post("/v1/segment", json={"type": "track", "userId": "u", "messageId": f"p{n}"},
                    headers=team.basic(team.ingest))  # fmt: skip
    client.post("/v1/segment", json={"type": "Bogus", "userId": "u", "messageId": "q"},
                headers=team.basic(team.ingest))  # fmt: skip
    seen: list[str] = []
    query = "?code=invalid_event&limit=2"
    while True:
        page = listed(client, team, query)
        seen += [item["message_id"] for item in page["data"]]
        if not page["next_cursor"]:
            break
        query = f"?code=invalid_event&limit=2&cursor={page['next_cursor']}"
    assert seen == ["p4", "p3", "p2", "p1", "p0"]
    assert [r["message_id"] for r in listed(client, team, "?code=unsupported_type")["data"]] == ["q"]
    assert listed(client, team, "?source=import")["data"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert listed(client, team, f"?since={future}")["data"] == []
    assert len(listed(client, team, f"?until={future}")["data"]) == 6


def test_another_teams_refusals_are_not_listed(
    client: FlaskClient, team: TeamKeys, other_team: TeamKeys
) -> None:
    client.post("/v1/segment", json={"type": "track", "userId": "u"}, headers=team.basic(team.ingest))
    assert listed(client, other_team)["data"] == []


@pytest.mark.parametrize(
    "query, field",
    [
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?code=NOT%20A%20CODE", "code"),
        ("?source=email", "source"),
        ("?since=yesterday", "since"),
        ("?cursor=bm90IGEgY3Vyc29y", "cursor"),
        ("?codes=invalid_event", "codes"),
    ],
)
def test_bad_query_is_400_naming_the_argument(
    client: FlaskClient, team: TeamKeys, query: str, field: str
) -> None:
    response = client.get(f"/api/v1/ingest/rejections{query}", headers=team.bearer(team.read))
    assert response.status_code == 400
    body = response.get_json()
    assert field in body["errors"] and body["code"] in ("invalid_query", "invalid_cursor")
    assert body["message"].startswith("Fix the query string")


def test_summary_refuses_arguments_and_both_routes_need_the_read_scope(
    client: FlaskClient, team: TeamKeys
) -> None:
    response = client.get("/api/v1/ingest/summary?days=3", headers=team.bearer(team.read))
    assert response.status_code == 400 and "days" in response.get_json()["errors"]
    for path in ("/api/v1/ingest/rejections", "/api/v1/ingest/summary"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=team.bearer(team.ingest)).status_code == 403
        assert client.get(path, headers=team.bearer(team.admin)).status_code == 200


def test_the_debugger_routes_are_documented_and_keep_their_word(
    app: Flask, client: FlaskClient, team: TeamKeys
) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    from tests.app.test_openapi import run_cases

    client.post("/v1/segment", json={"type": "track", "userId": "u"}, headers=team.basic(team.ingest))
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in ("/api/v1/ingest/rejections", "/api/v1/ingest/summary"):
        operation = paths[path]["get"]
        assert "x-undocumented" not in operation and operation["operationId"]
        assert {"200", "400", "401", "403"} <= set(operation["responses"])
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    runs = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.path.startswith("/api/v1/ingest/"):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_cases(operation.as_strategy(generation_mode=mode), team.bearer(team.read))
                runs += 1
    assert runs == 4
