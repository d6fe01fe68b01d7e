"""profile api: trait history, per-name event summaries, memberships that can end

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trait_history",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("key_norm", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tiebreak", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "event_id", "key_norm", name=op.f("pk_trait_history")),
    )
    op.create_index(
        "ix_trait_history_previous",
        "trait_history",
        ["team_id", "customer_id", "key_norm", "event_time", "tiebreak"],
        unique=False,
    )
    op.create_table(
        "event_summaries",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "customer_id", "type", "name", name=op.f("pk_event_summaries")),
    )
    # Memberships are small (a row per customer and group): adding columns with a
    # constant default rewrites nothing on Postgres 11+.
    op.add_column("memberships", sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("memberships", sa.Column("state_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("memberships", sa.Column("state_tiebreak", sa.BigInteger(), nullable=True))
    op.alter_column("memberships", "joined_at", nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM memberships WHERE joined_at IS NULL")
    op.alter_column("memberships", "joined_at", nullable=False)
    op.drop_column("memberships", "state_tiebreak")
    op.drop_column("memberships", "state_at")
    op.drop_column("memberships", "active")
    op.drop_table("event_summaries")
    op.drop_index("ix_trait_history_previous", table_name="trait_history")
    op.drop_table("trait_history")
