"""no statistics on team_id: a team's share of a table is never read from stale statistics

Every team-scoped table is indexed by `team_id` first and then by what a statement looks
for (`events`: the primary key `(team_id, id)`, the feed's `(team_id, customer_id, ...)`).
With statistics on `team_id`, a team that was small or absent at the last ANALYZE is
estimated at one row, and then every index that starts with `team_id` looks as cheap as
the primary key: the fold's primary-key probes (`SELECT ... FROM events WHERE team_id =
:team AND id = x.id LIMIT 1`) were planned on the feed index and scanned all of the
team's events for each probe (measured in `bin/bench`'s end-to-end rows on the embedded
Postgres, where autovacuum runs: 5.5 ms a probe, the fold at ~375 events/s beside ingest
against ~6,000/s when no ANALYZE had run).

Without statistics on the column, Postgres estimates every team at its default share
(0.5% of the table) whatever the team's size and whenever the last ANALYZE ran, so a
probe on a unique key always beats a scan of a team's rows. Reads that need a team's
real size do not exist here: every read is of one customer, one group or one page. A
customer's timeline is then estimated smaller than it may be (the team's default share
times the customer's): the filtered feed page, which must read the timeline index in
order, turns bitmap scans off for its transaction as the fold does (store/feed.py).
(Extended statistics telling the planner that a customer belongs to one team cannot be
built on a column without statistics.)

Statistics already gathered on the column stay in `pg_statistic` until deleted, which
only a superuser may do: done here when allowed (the embedded and test databases);
elsewhere an operator runs the DELETE below once as a superuser (docs/operations.md).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEAM_TABLES = (
    "aliases",
    "anonymous_claims",
    "api_keys",
    "customer_traits",
    "customers",
    "event_summaries",
    "events",
    "fold_failures",
    "group_traits",
    "groups",
    "identities",
    "ingest_counts",
    "ingest_rejections",
    "key_audit",
    "memberships",
    "tombstone_links",
    "tombstones",
    "trait_history",
)

FORGET_TEAM_STATISTICS = """
DO $$
BEGIN
    DELETE FROM pg_statistic s USING pg_attribute a
    WHERE a.attrelid = s.starelid AND a.attnum = s.staattnum AND a.attname = 'team_id'
      AND s.starelid = ANY (ARRAY[{tables}]::regclass[]);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'statistics on team_id kept: delete them as a superuser (docs/operations.md)';
END $$
"""


def upgrade() -> None:
    for table in TEAM_TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN team_id SET STATISTICS 0")
    op.execute(FORGET_TEAM_STATISTICS.format(tables=", ".join(f"'{table}'" for table in TEAM_TABLES)))


def downgrade() -> None:
    for table in TEAM_TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN team_id SET STATISTICS -1")
