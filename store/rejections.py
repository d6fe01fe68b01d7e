"""The team's ingestion debugger in Postgres: refused events kept, bounded; hourly counts.

Refusals (HTTP ingest and import) are kept per team in `ingest_rejections`, bounded
twice so a flood of junk cannot fill the disk: one call stores at most
`MAX_PER_CALL` of them (the latest), and each call then prunes the team to its latest
`MAX_KEPT`. Every refusal, kept or not, is *counted* in `ingest_counts` (per team,
hour, source, type, outcome and code: a few hundred rows per team and week whatever
the traffic), with the accepted, duplicate and expired events beside them; counts older than
`COUNTS_KEPT` are pruned as new ones are added. `GET /api/v1/ingest/summary` reads
the counts, `GET /api/v1/ingest/rejections` the kept refusals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

MAX_KEPT = 1000  # refusals kept per team (the latest)
MAX_PER_CALL = 100  # refusals stored by one call (the latest of them); the rest are counted
COUNTS_KEPT = timedelta(days=8)  # the summary's longest window is 7 days

# `expired`: older than the team's retention when it arrived, answered 200 and not stored
# (store/retention.py).
OUTCOMES = ("accepted", "duplicate", "refused", "expired")


@dataclass(frozen=True)
class Refusal:
    """One refused event (or whole request), ready to keep (preview already key-free)."""

    at: datetime
    source: str  # "http" | "import"
    route: str
    status: int
    code: str
    message: str
    message_id: str | None
    type: str | None
    preview: str
    line: int | None = None


@dataclass(frozen=True)
class CountKey:
    """What one hourly counter counts."""

    hour: datetime
    source: str
    type: str
    outcome: str
    code: str = ""


def hour_of(moment: datetime) -> datetime:
    """The start of the hour of `moment` (counters are hourly)."""
    return moment.replace(minute=0, second=0, microsecond=0)


_INSERT_REFUSALS = text(
    """
    INSERT INTO ingest_rejections (team_id, at, source, route, line, status, code, message,
                                   message_id, type, preview)
    SELECT :team_id, at, source, route, line, status, code, message, message_id, type, preview
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        at timestamptz, source text, route text, line bigint, status integer, code text,
        message text, message_id text, type text, preview text)
    """
)
# Only the team's latest MAX_KEPT survive. The team holds at most MAX_KEPT + MAX_PER_CALL
# rows when this runs, so the scan of its primary key is short.
_PRUNE_REFUSALS = text(
    """
    DELETE FROM ingest_rejections
    WHERE team_id = :team_id AND id < (
        SELECT id FROM ingest_rejections WHERE team_id = :team_id
        ORDER BY id DESC OFFSET :keep - 1 LIMIT 1)
    """
)
_ADD_COUNTS = text(
    """
    INSERT INTO ingest_counts AS c (team_id, hour, source, type, outcome, code, count)
    SELECT :team_id, hour, source, type, outcome, code, n
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        hour timestamptz, source text, type text, outcome text, code text, n bigint)
    ON CONFLICT (team_id, hour, source, type, outcome, code)
    DO UPDATE SET count = c.count + excluded.count
    """
)
_PRUNE_COUNTS = text("DELETE FROM ingest_counts WHERE team_id = :team_id AND hour < :cutoff")


def record_rejections(
    connection: Connection,
    team_id: int,
    refusals: Sequence[Refusal],
    counts: Mapping[CountKey, int],
    now: datetime,
) -> None:
    """Keep (the latest MAX_PER_CALL of) `refusals` and add `counts`, in the caller's transaction.

    The caller counts every refusal in `counts` (kept or not); this function never
    stores more than MAX_PER_CALL rows nor leaves more than MAX_KEPT for the team.
    """
    kept = list(refusals)[-MAX_PER_CALL:]
    if kept:
        rows = [
            {
                "at": r.at.isoformat(),
                "source": r.source,
                "route": r.route[:1000],
                "line": r.line,
                "status": r.status,
                "code": r.code,
                "message": r.message,
                "message_id": r.message_id,
                "type": r.type,
                "preview": r.preview,
            }
            for r in kept
        ]
        connection.execute(_INSERT_REFUSALS, {"team_id": team_id, "rows": _document(rows)})
        connection.execute(_PRUNE_REFUSALS, {"team_id": team_id, "keep": MAX_KEPT})
    positive = {key: n for key, n in counts.items() if n > 0}
    if positive:
        rows = [
            {
                "hour": key.hour.isoformat(),
                "source": key.source,
                "type": key.type,
                "outcome": key.outcome,
                "code": key.code,
                "n": n,
            }
            # A fixed order: two transactions adding to the same counters lock them in
            # the same order, so they cannot deadlock.
            for key, n in sorted(positive.items(), key=lambda item: _order(item[0]))
        ]
        connection.execute(_ADD_COUNTS, {"team_id": team_id, "rows": _document(rows)})
        connection.execute(_PRUNE_COUNTS, {"team_id": team_id, "cutoff": now - COUNTS_KEPT})


def _order(key: CountKey) -> tuple[str, str, str, str, str]:
    return (key.hour.isoformat(), key.source, key.type, key.outcome, key.code)


def _document(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class RejectionFilter:
    """Which kept refusals to list."""

    code: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_rejections(
    connection: Connection, team_id: int, where: RejectionFilter, limit: int, before_id: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the team's kept refusals, newest first; and the id to continue before."""
    clauses = ["team_id = :team_id"]
    params: dict[str, Any] = {"team_id": team_id, "limit": limit + 1}
    for name, clause in (
        ("code", "code = :code"),
        ("source", "source = :source"),
        ("since", "at >= :since"),
        ("until", "at < :until"),
    ):
        value = getattr(where, name)
        if value is not None:
            clauses.append(clause)
            params[name] = value
    if before_id is not None:
        clauses.append("id < :before_id")
        params["before_id"] = before_id
    rows = connection.execute(
        text(
            "SELECT id, at, source, route, line, status, code, message, message_id, type, preview "
            f"FROM ingest_rejections WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT :limit"
        ),
        params,
    ).mappings()
    page = [dict(row) for row in rows]
    more = len(page) > limit
    page = page[:limit]
    for row in page:
        row["id"] = str(row["id"])
    return page, (int(page[-1]["id"]) if more and page else None)


def _window(since: datetime) -> dict[str, Any]:
    return {
        "since": since,
        "accepted": 0,
        "duplicates": 0,
        "refused": 0,
        "expired": 0,
        "by_type": {},
        "refused_by_code": {},
    }


def summarize_ingest(connection: Connection, team_id: int, now: datetime) -> dict[str, Any]:
    """Accepted, duplicate, refused and expired counts per type (refusals per code too),
    last 24 hours and 7 days.

    Windows are whole hours: `last_24h` starts at the hour 24 hours before this one.
    """
    day, week = hour_of(now - timedelta(hours=24)), hour_of(now - timedelta(days=7))
    rows = connection.execute(
        text(
            """
            SELECT type, outcome, code,
                   coalesce(sum(count) FILTER (WHERE hour >= :day), 0) AS day,
                   sum(count) AS week
            FROM ingest_counts
            WHERE team_id = :team_id AND hour >= :week
            GROUP BY type, outcome, code
            """
        ),
        {"team_id": team_id, "day": day, "week": week},
    ).all()
    windows = {"last_24h": _window(day), "last_7d": _window(week)}
    for row in rows:
        for name, n in (("last_24h", int(row.day)), ("last_7d", int(row.week))):
            if n:
                _add(windows[name], row.type, row.outcome, row.code, n)
    return windows


def _add(window: dict[str, Any], kind: str, outcome: str, code: str, n: int) -> None:
    total = {"accepted": "accepted", "duplicate": "duplicates", "refused": "refused", "expired": "expired"}[
        outcome
    ]
    window[total] += n
    per_type = window["by_type"].setdefault(
        kind, {"accepted": 0, "duplicates": 0, "refused": 0, "expired": 0}
    )
    per_type[total] += n
    if outcome == "refused":
        per_code = window["refused_by_code"].setdefault(code, {})
        per_code[kind] = per_code.get(kind, 0) + n
