"""team retention: how long a team's events are kept, and `expired` ingest counts (issue 25)

- `teams.retention_days`: the team's own retention in days (NULL: the operator's
  `RETENTION_DAYS`, or keep everything when that is unset), 1 to 3650; the rule that
  combines both is `store/retention.py` (docs/retention.md).
- `ingest_counts.outcome` may be `expired`: an event older than its team's retention when
  it arrived, answered 200 and not stored (docs/ingest-debugger.md).

Both are catalog-only changes (a nullable column without a default; a CHECK replaced),
so they hold their locks for milliseconds; the new CHECK is added NOT VALID and then
validated, which reads `ingest_counts` (a few hundred rows per team) without blocking writes.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("teams", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_check_constraint("ck_teams_retention_days", "teams", "retention_days BETWEEN 1 AND 3650")
    op.drop_constraint("ck_ingest_counts_outcome", "ingest_counts", type_="check")
    op.execute(
        "ALTER TABLE ingest_counts ADD CONSTRAINT ck_ingest_counts_outcome "
        "CHECK (outcome IN ('accepted', 'duplicate', 'refused', 'expired')) NOT VALID"
    )
    op.execute("ALTER TABLE ingest_counts VALIDATE CONSTRAINT ck_ingest_counts_outcome")


def downgrade() -> None:
    op.execute("DELETE FROM ingest_counts WHERE outcome = 'expired'")
    op.drop_constraint("ck_ingest_counts_outcome", "ingest_counts", type_="check")
    op.create_check_constraint(
        "ck_ingest_counts_outcome", "ingest_counts", "outcome IN ('accepted', 'duplicate', 'refused')"
    )
    op.drop_constraint("ck_teams_retention_days", "teams", type_="check")
    op.drop_column("teams", "retention_days")
