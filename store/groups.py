"""Reading a group inside one team: its traits and one keyset page of its members (SPEC §4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from schemas.cursors import MemberPosition
from store.customers import SUMMARY_COLUMNS, summaries


def load_group(
    connection: Connection,
    team_id: int,
    group_id: str,
    *,
    limit: int,
    after: MemberPosition | None = None,
) -> tuple[dict[str, Any], MemberPosition | None] | None:
    """A group with its traits and its current members, one page (by joined_at, then id), or None.

    A company only ever named in identifies' `traits.company` has no group call: it is
    answered from its memberships (no name, no traits, seen when they were).
    """
    params: dict[str, Any] = {"team": team_id, "group": group_id, "limit": limit + 1}
    group = connection.execute(
        text(
            """
            SELECT group_id, name, first_seen, last_seen FROM groups
            WHERE team_id = :team AND group_id = :group
            UNION ALL
            SELECT :group, NULL, min(COALESCE(joined_at, last_seen)), max(last_seen) FROM memberships
            WHERE team_id = :team AND group_id = :group
              AND NOT EXISTS (SELECT 1 FROM groups WHERE team_id = :team AND group_id = :group)
            HAVING count(*) > 0
            """
        ),
        params,
    ).first()
    if group is None:
        return None
    traits = connection.execute(
        text("SELECT key, value FROM group_traits WHERE team_id = :team AND group_id = :group ORDER BY key"),
        params,
    ).all()
    member_count = connection.execute(
        text("SELECT count(*) FROM memberships WHERE team_id = :team AND group_id = :group AND active"),
        params,
    ).scalar_one()
    keyset = ""
    if after is not None:
        keyset = "AND (m.joined_at, m.customer_id) > (:after_joined, :after_id)"
        params.update(after_joined=after.joined_at, after_id=after.customer_id)
    rows = connection.execute(
        text(
            f"""
            SELECT {SUMMARY_COLUMNS}, m.joined_at
            FROM memberships m
            JOIN customers c ON c.team_id = m.team_id AND c.id = m.customer_id
            WHERE m.team_id = :team AND m.group_id = :group AND m.active AND c.merged_into IS NULL {keyset}
            ORDER BY m.joined_at, m.customer_id
            LIMIT :limit
            """
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    members = summaries(connection, team_id, rows)
    for member, row in zip(members, rows, strict=True):
        member["joined_at"] = row.joined_at
    last = rows[-1] if rows and more else None
    found = {
        "id": group.group_id,
        "name": group.name,
        "traits": {key: value for key, value in traits},
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "member_count": member_count,
        "members": members,
    }
    return found, (MemberPosition(last.joined_at, last.id) if last else None)
