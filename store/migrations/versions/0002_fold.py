"""fold: tombstone links for deletes; indexes of group calls and merged customers

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tombstone_links",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "user_id", "kind", "value", name=op.f("pk_tombstone_links")),
    )
    op.create_index(
        "ix_customers_merged_into",
        "customers",
        ["team_id", "merged_into"],
        unique=False,
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.create_index(
        "ix_events_group_calls",
        "events",
        ["team_id", "group_id"],
        unique=False,
        postgresql_where=sa.text("type = 'group'"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_group_calls", table_name="events", postgresql_where=sa.text("type = 'group'"))
    op.drop_index(
        "ix_customers_merged_into",
        table_name="customers",
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.drop_table("tombstone_links")
