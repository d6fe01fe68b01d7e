"""Reading a group inside one team: its traits and one keyset page of its members (SPEC §4).

The group is built as JSON by Postgres in one statement, as `store/answers/group.py`
declares it (`GROUP`, its members `GROUP_MEMBER`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from schemas.cursors import InstantPosition
from store.answers.group import GROUP, GROUP_MEMBER
from store.snapshot import snapshot

# `g`: the group's row; a company only ever named in identifies' `traits.company` has no
# group call, and is answered from its memberships (no name, no traits, seen when they
# were). `members`: one page of its current members by (joined_at, customer id), one more
# than `:shown` fetched to see whether another page follows; each member's JSON is built
# over the page's rows (the inner LIMIT first), in the order they come (no sort).
_GROUP_SQL = f"""
    WITH g AS (
        SELECT group_id, name, first_seen, last_seen FROM groups
        WHERE team_id = :team AND group_id = :group
        UNION ALL
        SELECT :group, NULL, min(COALESCE(joined_at, last_seen)), max(last_seen) FROM memberships
        WHERE team_id = :team AND group_id = :group
          AND NOT EXISTS (SELECT 1 FROM groups WHERE team_id = :team AND group_id = :group)
        HAVING count(*) > 0
    )
    SELECT {GROUP.sql()}::text AS body, members.fetched, members.last_joined, members.last_id
    FROM g
    CROSS JOIN LATERAL (
        SELECT COALESCE(json_agg(member ORDER BY joined_at, id) FILTER (WHERE n <= :shown), '[]') AS shown,
               count(*) AS fetched,
               max(joined_at) FILTER (WHERE n = :shown) AS last_joined,
               max(id) FILTER (WHERE n = :shown) AS last_id
        FROM (
            SELECT {GROUP_MEMBER.sql()} AS member, m.joined_at, c.id,
                   row_number() OVER (ORDER BY m.joined_at, m.customer_id) AS n
            FROM (
                SELECT m.team_id, m.customer_id, m.joined_at
                FROM memberships m
                JOIN customers c ON c.team_id = m.team_id AND c.id = m.customer_id
                WHERE m.team_id = :team AND m.group_id = g.group_id AND m.active AND c.merged_into IS NULL
                  {{keyset}}
                ORDER BY m.joined_at, m.customer_id
                LIMIT :limit
            ) m
            JOIN customers c ON c.team_id = m.team_id AND c.id = m.customer_id
        ) numbered
    ) members
"""

_KEYSET = "AND (m.joined_at, m.customer_id) > (:after_joined, :after_id)"


def read_group(
    connection: Connection,
    team_id: int,
    group_id: str,
    *,
    limit: int,
    after: InstantPosition | None = None,
) -> tuple[str, InstantPosition | None] | None:
    """(the group's JSON text, where its next page of members starts, None at the end), or
    None for a group unknown in the team.

    One statement, in autocommit (its own snapshot). The JSON is `GROUP` without the key
    the read adds: `GROUP.completed(body, next_cursor=...)` is the answer.
    """
    params: dict[str, Any] = {"team": team_id, "group": group_id, "shown": limit, "limit": limit + 1}
    if after is not None:
        params.update(after_joined=after.at, after_id=after.id)
    statement = text(_GROUP_SQL.replace("{keyset}", _KEYSET if after is not None else ""))
    with snapshot(connection, several=False):
        row = connection.execute(statement, params).first()
    if row is None:
        return None
    more = row.fetched > limit
    return row.body, (InstantPosition(row.last_joined, row.last_id) if more else None)
