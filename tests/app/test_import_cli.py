"""`flask events import`: an archive in, the same timelines out, each event once, bad lines reported."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from schemas.segment import prepare_event
from tests.conftest import TeamKeys
from tests.workers.model import expected_state, snapshot

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def history(customers: int, seed: int = 7) -> list[dict[str, Any]]:
    """Raw Segment events as an archive holds them: visits, identifies, companies, aliases."""
    rng = random.Random(seed)
    made: list[dict[str, Any]] = []
    for c in range(customers):
        anon, user, minute = f"anon-{c}", f"user-{c}", rng.uniform(0, 600)
        for n in range(rng.randint(4, 12)):
            minute += rng.uniform(0.1, 5)
            base = {"messageId": f"m{c}-{n}", "timestamp": at(minute), "receivedAt": at(minute + 0.01)}
            if n < 2:
                made.append({**base, "type": "page", "anonymousId": anon, "name": "Pricing"})
            elif n == 2:
                traits = {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"])}
                made.append(
                    {**base, "type": "identify", "userId": user, "anonymousId": anon, "traits": traits}
                )
            elif n == 3 and c % 3 == 0:
                made.append({**base, "type": "group", "userId": user, "groupId": f"g{c % 4}",
                             "traits": {"name": f"Company {c % 4}"}})  # fmt: skip
            elif n == 4 and c % 5 == 0 and c > 0:
                made.append({**base, "type": "alias", "userId": user, "previousId": f"user-{c - 1}"})
            else:
                made.append({**base, "type": "track", "userId": user, "event": "Clicked",
                             "properties": {"n": n}})  # fmt: skip
    rng.shuffle(made)
    return made


BAD_LINES = [
    (b"{not json\n", None, "invalid_json"),
    (b'{"type": "track", "messageId": "bad-1", "event": "X", "timestamp": "2024-03-01T00:00:00Z"}\n',
     "bad-1", "invalid_event"),
    (b'{"type": "Track", "messageId": "bad-2", "userId": "u"}\n', "bad-2", "unsupported_type"),
    (b'[1, 2]\n', None, "invalid_event"),
]  # fmt: skip


def write_jsonl(path: Path, events: list[dict[str, Any]], extra: list[bytes] = (), gz: bool = False) -> None:  # type: ignore[assignment]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps(event).encode() + b"\n" for event in events) + b"".join(extra)
    path.write_bytes(gzip.compress(data) if gz else data)


def make_archive(root: Path, events: list[dict[str, Any]]) -> Path:
    """Segment's layout: segment-logs/{source-id}/{received-day}/{file}.gz, plus a plain day."""
    logs = root / "segment-logs" / "Src1aB2c"
    third = len(events) // 3
    write_jsonl(logs / "1709251200000" / "1709290000-aaaa.gz", events[:third], [BAD_LINES[0][0]], gz=True)
    write_jsonl(logs / "1709251200000" / "1709295000-bbbb.gz", events[third : 2 * third], [BAD_LINES[1][0]],
                gz=True)  # fmt: skip
    write_jsonl(
        logs / "1709337600000" / "extra.jsonl", events[2 * third :], [BAD_LINES[2][0], BAD_LINES[3][0]]
    )
    (logs / "1709337600000" / "README.txt").write_text("not an archive file, skipped")
    return root / "segment-logs"


def run_import(app: Flask, *args: str, stdin: bytes | None = None) -> tuple[int, dict[str, Any], str]:
    result = app.test_cli_runner().invoke(args=["events", "import", *args], input=stdin)
    out = result.stdout
    summary = json.loads(out[out.index("{") :]) if "{" in out else {}
    return result.exit_code, summary, result.stderr


def stored_ids(engine: Engine, team_id: int) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT message_id FROM events WHERE team_id = :t ORDER BY message_id"), {"t": team_id}
            ).scalars()
        )


def test_archive_import_gives_exactly_the_timelines_of_its_events(
    app: Flask, client: FlaskClient, engine: Engine, team: TeamKeys, tmp_path: Path, fold: Any
) -> None:
    events = history(30)
    # Some of the history already came in over HTTP: those lines are duplicates.
    already = events[:25]
    response = client.post("/v1/batch", json={"batch": already}, headers=team.basic(team.ingest))
    assert response.status_code == 200 and response.get_json()["accepted"] == 25
    archive = make_archive(tmp_path, events)
    report = tmp_path / "report.jsonl"

    code, summary, stderr = run_import(app, "--team", str(team.id), "--report", str(report), str(archive))
    fold()

    assert code == 1  # some lines were refused
    assert str(report) in stderr
    assert summary["files"] == 3
    assert summary["read"] == len(events) + len(BAD_LINES)
    assert summary["stored"] == len(events) - 25
    assert summary["duplicates"] == 25
    assert summary["rejected"] == len(BAD_LINES)
    assert stored_ids(engine, team.id) == sorted(e["messageId"] for e in events)
    prepared = [prepare_event(event, T0) for event in events]
    with engine.connect() as connection:
        assert snapshot(connection, team.id) == expected_state(prepared)
    # The agents' API shows the imported history: a customer's feed holds their events.
    lookup = client.get("/api/v1/customers/lookup?user_id=user-3", headers=team.bearer(team.read))
    assert lookup.status_code == 200
    feed = client.get(f"/api/v1/customers/{lookup.get_json()['id']}/feed?limit=200",
                      headers=team.bearer(team.read))  # fmt: skip
    assert {item["message_id"] for item in feed.get_json()["data"]} >= {
        e["messageId"] for e in events if e.get("userId") == "user-3" and e["type"] != "alias"
    }

    reported = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["code"], r["messageId"]) for r in reported] == [(c, m) for _, m, c in BAD_LINES]
    first = reported[0]
    assert first["file"].endswith("1709290000-aaaa.gz") and first["line"] == len(events) // 3 + 1
    assert "userId or anonymousId" in reported[1]["message"]
    assert all(r["file"] and r["line"] >= 1 and r["message"] for r in reported)


def test_second_run_stores_nothing_new_and_says_so(
    app: Flask, engine: Engine, team: TeamKeys, tmp_path: Path
) -> None:
    events = history(5)
    path = tmp_path / "events.json.gz"
    write_jsonl(path, events, gz=True)
    args = ("--team", str(team.id), "--report", str(tmp_path / "r.jsonl"), str(path))
    code, first, _ = run_import(app, *args)
    assert code == 0 and first["stored"] == len(events) and first["rejected"] == 0
    code, second, _ = run_import(app, *args)
    assert code == 0
    assert second["stored"] == 0 and second["duplicates"] == len(events)
    assert "Nothing new" in second["message"]
    assert len(stored_ids(engine, team.id)) == len(events)


def test_an_import_that_refuses_nothing_leaves_no_report_file(
    app: Flask, team: TeamKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default report goes to the working directory: only when a line was refused."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.jsonl"
    write_jsonl(path, history(3))
    code, summary, _ = run_import(app, "--team", str(team.id), str(path))
    assert code == 0 and summary["rejected"] == 0 and summary["report"] is None
    assert not list(tmp_path.glob("import-report-*"))

    write_jsonl(path, history(3, seed=8), [BAD_LINES[0][0]])
    code, summary, _ = run_import(app, "--team", str(team.id), str(path))
    assert code == 1 and summary["rejected"] == 1
    (report,) = tmp_path.glob("import-report-*.jsonl")
    assert summary["report"] == report.name
    assert [json.loads(line)["code"] for line in report.read_text().splitlines()] == ["invalid_json"]


def test_stdin_import_and_events_without_message_id_dedupe_on_rerun(
    app: Flask, engine: Engine, team: TeamKeys, tmp_path: Path
) -> None:
    lines = b"".join(
        json.dumps({"type": "track", "userId": "u1", "event": f"E{n}", "timestamp": at(n)}).encode() + b"\n"
        for n in range(10)
    )
    args = ("--team", str(team.id), "--report", str(tmp_path / "r.jsonl"), "-")
    code, summary, _ = run_import(app, *args, stdin=lines + b"\n")  # a blank line is no event
    assert code == 0 and summary["read"] == 10 and summary["stored"] == 10
    code, again, _ = run_import(app, *args, stdin=gzip.compress(lines))  # gzip on stdin too
    assert code == 0 and again["stored"] == 0 and again["duplicates"] == 10
    assert all(m.startswith("derived-") for m in stored_ids(engine, team.id))


def stored_raw(engine: Engine, team_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT message_id, type, raw FROM events WHERE team_id = :t"), {"t": team_id}
        ).all()
    return {(m, kind): raw for m, kind, raw in rows}


def test_the_first_line_of_a_key_is_stored_whatever_batch_the_repeats_fall_in(
    app: Flask, engine: Engine, team: TeamKeys, tmp_path: Path
) -> None:
    def event(n: int, kind: str = "track", version: int = 1) -> dict[str, Any]:
        made = {"type": kind, "userId": "u1", "messageId": f"r{n}", "timestamp": at(n),
                "properties": {"version": version}}  # fmt: skip
        if kind == "track":
            made["event"] = "Viewed"
        return made

    lines = [event(n) for n in range(250)]
    lines.insert(10, event(3, version=2))  # repeated in the same batch, after the first
    lines.insert(20, event(3, kind="page"))  # the same messageId, another type: its own event
    lines.insert(150, event(5, version=3))  # repeated in a later batch of this run
    lines.append(event(200, version=4))  # repeated in the same (last) batch
    path = tmp_path / "repeats.jsonl"
    write_jsonl(path, lines)
    report = tmp_path / "r.jsonl"
    args = ("--team", str(team.id), "--batch", "100", "--report", str(report), str(path))

    code, summary, _ = run_import(app, *args)

    assert code == 0
    assert summary["read"] == len(lines)
    assert summary["stored"] == 251 and summary["duplicates"] == 3
    assert summary["stored_by_type"] == {"page": 1, "track": 250}
    assert summary["duplicates_by_type"] == {"track": 3}
    raw = stored_raw(engine, team.id)
    assert len(raw) == 251
    assert {raw[(f"r{n}", "track")]["properties"]["version"] for n in (3, 5, 200)} == {1}
    assert ("r3", "page") in raw
    with engine.connect() as connection:
        counted = dict(
            connection.execute(
                text(
                    "SELECT outcome, sum(count) FROM ingest_counts WHERE team_id = :t AND source = 'import'"
                    " GROUP BY outcome"
                ),
                {"t": team.id},
            ).all()
        )
    assert counted == {"accepted": 251, "duplicate": 3}

    code, again, _ = run_import(app, *args)
    assert code == 0 and again["stored"] == 0 and again["duplicates"] == len(lines)


def test_broken_gzip_is_reported_and_the_next_files_are_imported(
    app: Flask, engine: Engine, team: TeamKeys, tmp_path: Path
) -> None:
    good = history(3)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.gz").write_bytes(
        gzip.compress(b'{"type": "identify", "userId": "x", "messageId": "x1"}\n')[:-12]
    )
    write_jsonl(tmp_path / "a" / "2.jsonl", good)
    report = tmp_path / "r.jsonl"
    code, summary, _ = run_import(app, "--team", str(team.id), "--report", str(report), str(tmp_path / "a"))
    assert code == 1
    assert summary["stored"] == len(good)
    (broken,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert broken["code"] == "invalid_gzip" and broken["file"].endswith("1.gz")


def test_unknown_team_or_path_exits_2_with_what_to_fix(app: Flask, team: TeamKeys, tmp_path: Path) -> None:
    result = app.test_cli_runner().invoke(args=["events", "import", "--team", "999999999", str(tmp_path)])
    assert result.exit_code == 2 and "team_not_found" in result.stderr
    missing = tmp_path / "nope.jsonl"
    result = app.test_cli_runner().invoke(args=["events", "import", "--team", str(team.id), str(missing)])
    assert result.exit_code == 2 and "no such file" in result.stderr


def flask_import(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLASK_APP"}
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "events", "import", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def count(engine: Engine, team_id: int) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM events WHERE team_id = :t"), {"t": team_id}
            ).scalar_one()
        )


@pytest.mark.slow
def test_run_killed_mid_file_and_run_again_stores_every_event_once(
    engine: Engine, team: TeamKeys, tmp_path: Path
) -> None:
    total = 5_000
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as archive:
        for n in range(total):
            event = {"type": "track", "userId": f"u{n % 500}", "event": "Viewed", "messageId": f"k{n}",
                     "timestamp": at(n / 60)}  # fmt: skip
            archive.write(json.dumps(event).encode() + b"\n")
    args = ["--team", str(team.id), "--batch", "100", "--report", str(tmp_path / "r.jsonl"), str(path)]
    process = flask_import(args)
    deadline = time.monotonic() + 60
    try:
        while count(engine, team.id) == 0:  # the first batches are committed
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps it and closes its pipes
    first = count(engine, team.id)
    assert 0 < first < total, "the run was not killed mid-file"

    again = flask_import(args)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    summary = json.loads(out)
    assert summary["stored"] == total - first and summary["duplicates"] == first
    assert count(engine, team.id) == total
    with engine.connect() as connection:
        distinct = connection.execute(
            text("SELECT count(DISTINCT message_id) FROM events WHERE team_id = :t"), {"t": team.id}
        ).scalar_one()
    assert distinct == total
    with engine.begin() as connection:  # a big unfolded team would skew the planner's statistics
        connection.execute(text("DELETE FROM events WHERE team_id = :t"), {"t": team.id})


def test_progress_is_a_plain_line_when_not_a_terminal_with_an_eta_when_the_size_is_known() -> None:
    import io

    from app.imports.cli import ProgressLine, describe
    from app.imports.importer import ImportProgress

    progress = ImportProgress(files=2, files_done=1, bytes_total=1000, bytes_done=250, read=5000,
                              stored=4000, duplicates=900, rejected=100)  # fmt: skip
    line = describe(progress)
    for part in ("25%", "read 5,000", "stored 4,000", "dup 900", "rejected 100", "events/s", "ETA"):
        assert part in line
    assert "ETA" not in describe(ImportProgress(files=1, bytes_total=None, read=10))
    stream = io.StringIO()
    display = ProgressLine(stream)
    display.update(progress)  # too soon after the start: nothing yet
    display.finish(progress)
    assert stream.getvalue().count("\n") == 1 and "\r" not in stream.getvalue()
