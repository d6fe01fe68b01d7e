"""keys: let Postgres refuse an unknown scope or audit action

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both tables hold a few rows per team, so the validating scan is brief; lock_timeout
    # (env.py) makes the step fail fast rather than queue behind live traffic.
    op.create_check_constraint(
        "ck_api_keys_scopes",
        "api_keys",
        "cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'admin']::text[]",
    )
    op.create_check_constraint("ck_key_audit_action", "key_audit", "action IN ('create', 'rotate', 'revoke')")


def downgrade() -> None:
    op.drop_constraint("ck_key_audit_action", "key_audit", type_="check")
    op.drop_constraint("ck_api_keys_scopes", "api_keys", type_="check")
