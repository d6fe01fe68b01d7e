"""profile api: trait history, per-name event summaries, memberships that can end

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
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
    backfill()


# The fold's rules as of this revision (workers/derived.py), copied so that the
# migration stays what it was when the fold changes later.
_NORM = "COALESCE(NULLIF(regexp_replace(lower(kv.key), '[[:space:]_.-]+', '', 'g'), ''), kv.key)"
_COMPANY = "(e.raw -> 'traits' -> 'company')"


def backfill() -> None:
    """Derive the new state from the events already folded: one pass over `events`.

    On a big deployment this is the long step of the upgrade (a scan of the events and
    an insert of their traits); the fold can keep running: it takes its batches under
    its own lock, and this runs in the migration's transaction.
    """
    op.execute(
        """
        INSERT INTO event_summaries (team_id, customer_id, type, name, event_count, first_at, last_at)
        SELECT team_id, customer_id, type, COALESCE(event_name, ''), count(*), min(event_time), max(event_time)
        FROM events
        WHERE customer_id IS NOT NULL AND type IN ('track', 'page', 'screen')
        GROUP BY team_id, customer_id, type, COALESCE(event_name, '')
        """
    )
    op.execute(
        f"""
        INSERT INTO trait_history (team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak)
        SELECT DISTINCT ON (e.team_id, e.id, t.norm)
               e.team_id, e.id, t.norm, e.customer_id, t.key, t.value, e.event_time, e.tiebreak
        FROM events e
        CROSS JOIN LATERAL (
            SELECT kv.key, kv.value, src.priority, {_NORM} AS norm
            FROM (VALUES (1, CASE WHEN e.type = 'identify' THEN e.raw -> 'traits' END),
                         (2, e.raw -> 'context' -> 'traits')) AS src(priority, obj)
            CROSS JOIN LATERAL jsonb_each(
                CASE WHEN jsonb_typeof(src.obj) = 'object' THEN src.obj ELSE '{{}}'::jsonb END) kv
        ) t
        WHERE e.customer_id IS NOT NULL
        ORDER BY e.team_id, e.id, t.norm, t.priority, t.key COLLATE "C"
        """
    )
    # Memberships again from their calls: group calls, and now identifies' traits.company.
    op.execute("DELETE FROM memberships")
    op.execute(
        f"""
        INSERT INTO memberships (team_id, customer_id, group_id, joined_at, last_seen, active,
                                 state_at, state_tiebreak)
        SELECT team_id, customer_id, group_id, min(event_time) FILTER (WHERE joins), max(event_time),
               (array_agg(joins ORDER BY event_time DESC, tiebreak DESC))[1],
               (array_agg(event_time ORDER BY event_time DESC, tiebreak DESC))[1],
               (array_agg(tiebreak ORDER BY event_time DESC, tiebreak DESC))[1]
        FROM (
            SELECT e.team_id, e.customer_id, e.event_time, e.tiebreak,
                   COALESCE(CASE WHEN e.type = 'group' THEN e.group_id END,
                            CASE WHEN e.type = 'identify' THEN CASE jsonb_typeof({_COMPANY})
                                WHEN 'string' THEN NULLIF({_COMPANY} #>> '{{}}', '')
                                WHEN 'object' THEN CASE WHEN jsonb_typeof({_COMPANY} -> 'id') IN ('string', 'number')
                                                   THEN NULLIF({_COMPANY} ->> 'id', '') END
                            END END) AS group_id,
                   NOT (e.type = 'identify' AND COALESCE(jsonb_typeof({_COMPANY}) = 'object'
                        AND {_COMPANY} -> 'remove' = 'true'::jsonb, false)) AS joins
            FROM events e
            WHERE e.customer_id IS NOT NULL AND e.type IN ('group', 'identify')
        ) calls
        WHERE group_id IS NOT NULL
        GROUP BY team_id, customer_id, group_id
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM memberships WHERE joined_at IS NULL")
    op.alter_column("memberships", "joined_at", nullable=False)
    op.drop_column("memberships", "state_tiebreak")
    op.drop_column("memberships", "state_at")
    op.drop_column("memberships", "active")
    op.drop_table("event_summaries")
    op.drop_index("ix_trait_history_previous", table_name="trait_history")
    op.drop_table("trait_history")
