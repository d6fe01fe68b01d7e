"""fold failures: events the fold set aside, with their errors

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new, empty table. No foreign key to events: bulk loads drop and rebuild its
    # primary key; workers/poison.py removes a row with its event.
    op.create_table(
        "fold_failures",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("error_class", sa.Text(), nullable=False),
        sa.Column("sqlstate", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "event_id", name=op.f("pk_fold_failures")),
    )


def downgrade() -> None:
    op.drop_table("fold_failures")
