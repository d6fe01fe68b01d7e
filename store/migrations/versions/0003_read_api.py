"""read api: an index to page a group's members

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # memberships is small next to events (one row per customer and group); a plain
    # CREATE INDEX holds its write lock briefly. On a big deployment, build it first
    # with CREATE INDEX CONCURRENTLY under this name and this step finds it there.
    op.create_index(
        "ix_memberships_group_joined",
        "memberships",
        ["team_id", "group_id", "joined_at", "customer_id"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_memberships_group_joined", table_name="memberships")
