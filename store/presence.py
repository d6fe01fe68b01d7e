"""Who of a team is active now, newest first: the console's home (store/answers/presence.py).

One statement: the customers whose `last_seen` is within the rule's window (`active_sql`),
one range of `ix_customers_recent` (team, last_seen DESC, id DESC) read in its order and
stopped at the page, each built as `ACTIVE_CUSTOMER` (its place one probe of the feed
index); and how many are active in all, counted up to `ACTIVE_COUNTED` (the same range,
no more). Its cost follows the customers shown, not the team's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from store.answers.presence import ACTIVE_CUSTOMER, active_sql
from store.snapshot import snapshot
from store.statements import prepared

# The count of customers active now stops here ("1,000 or more").
ACTIVE_COUNTED = 1_000

_ACTIVE = f"c.team_id = :team AND c.merged_into IS NULL AND {active_sql('c.last_seen')}"

ACTIVE_CUSTOMERS_SQL = f"""
    SELECT COALESCE((
               SELECT json_agg(item ORDER BY n)
               FROM (
                   SELECT {ACTIVE_CUSTOMER.sql()} AS item,
                          row_number() OVER (ORDER BY c.last_seen DESC NULLS LAST, c.id DESC) AS n
                   FROM (
                       SELECT c.* FROM customers c WHERE {_ACTIVE}
                       ORDER BY c.last_seen DESC NULLS LAST, c.id DESC
                       LIMIT :shown
                   ) c
               ) shown), '[]')::text AS items,
           (SELECT count(*) FROM (
               SELECT 1 FROM customers c WHERE {_ACTIVE} LIMIT {ACTIVE_COUNTED}
           ) counted) AS active
"""


@dataclass(frozen=True)
class ActiveCustomers:
    """The newest customers active now (JSON, `ActiveCustomerSchema` items) and how many
    are active in all (at most ACTIVE_COUNTED)."""

    items_json: str
    active: int


def read_active_customers(
    connection: Connection, team_id: int, now: datetime, *, limit: int
) -> ActiveCustomers:
    """The team's customers active at `now`, the most recently seen first, at most `limit`."""
    statement, names = prepared(ACTIVE_CUSTOMERS_SQL)
    params = {"team": team_id, "now": now, "shown": limit}
    with snapshot(connection, several=False):
        row = connection.execute(statement, {name: params[name] for name in names}).one()
    return ActiveCustomers(row.items, int(row.active))
