"""ingest debugger: the refused events kept per team, and hourly ingest counts

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Two new tables: nothing to lock but themselves.
    op.create_table(
        "ingest_rejections",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.CheckConstraint("source IN ('http', 'import')", name="ck_ingest_rejections_source"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_ingest_rejections_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("team_id", "id", name=op.f("pk_ingest_rejections")),
    )
    op.create_table(
        "ingest_counts",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('accepted', 'duplicate', 'refused')", name="ck_ingest_counts_outcome"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_ingest_counts_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "team_id", "hour", "source", "type", "outcome", "code", name=op.f("pk_ingest_counts")
        ),
    )


def downgrade() -> None:
    op.drop_table("ingest_counts")
    op.drop_table("ingest_rejections")
