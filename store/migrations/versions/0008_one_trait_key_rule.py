"""one trait-key rule, and deletes placed at their receipt too (issue 22)

- `tombstones.received_at`: when the delete that set the tombstone was received. A delete
  erases every event of the person received by then, whatever its event time. Existing
  tombstones take their delete's time (what stood for it before).
- Trait keys are normalised by one rule that no locale decides (ASCII case folding,
  `schemas.segment.normalise_trait_key`); stored `key_norm`s made by the database's
  `lower()` (which folded non-ASCII letters as the locale said, `EMAİL` -> `email`) are
  made again by the new rule, keeping per key the latest value (the tie rules of the
  fold), and the email and name of the customers concerned follow.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule as it was then, frozen here (now schemas/trait_keys.py `normalised_key_sql`).
NORM = """COALESCE(NULLIF(regexp_replace(lower(key COLLATE "C"), '[[:space:]_.-]+', '', 'g'), ''), key)"""


def upgrade() -> None:
    op.add_column("tombstones", sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE tombstones SET received_at = deleted_at")
    op.alter_column("tombstones", "received_at", nullable=False)

    for table, owner in (("customer_traits", "customer_id"), ("group_traits", "group_id")):
        columns = f"team_id, {owner}, key_norm, key, value, event_time, tiebreak"
        op.execute(
            f"""CREATE TEMP TABLE rekeyed ON COMMIT DROP AS
                SELECT team_id, {owner}, {NORM} AS key_norm, key, value, event_time, tiebreak
                FROM {table} WHERE key_norm <> {NORM}"""
        )
        op.execute(f"DELETE FROM {table} WHERE key_norm <> {NORM}")
        op.execute(
            f"""INSERT INTO {table} AS t ({columns})
                SELECT DISTINCT ON (team_id, {owner}, key_norm) {columns} FROM rekeyed
                ORDER BY team_id, {owner}, key_norm, event_time DESC, tiebreak DESC, key COLLATE "C"
                ON CONFLICT (team_id, {owner}, key_norm) DO UPDATE
                SET key = excluded.key, value = excluded.value,
                    event_time = excluded.event_time, tiebreak = excluded.tiebreak
                WHERE (excluded.event_time, excluded.tiebreak) > (t.event_time, t.tiebreak)"""
        )
        if table == "customer_traits":
            trait = """(SELECT t.value #>> '{{}}' FROM customer_traits t
                        WHERE t.team_id = c.team_id AND t.customer_id = c.id AND t.key_norm = '{key}'
                          AND jsonb_typeof(t.value) = 'string')"""
            op.execute(
                f"""UPDATE customers c SET
                        email = {trait.format(key="email")},
                        name = COALESCE({trait.format(key="name")}, NULLIF(btrim(concat_ws(' ',
                            {trait.format(key="firstname")}, {trait.format(key="lastname")})), ''))
                    FROM (SELECT DISTINCT team_id, customer_id FROM rekeyed) r
                    WHERE c.team_id = r.team_id AND c.id = r.customer_id"""
            )
        else:
            op.execute(
                """UPDATE groups g SET name = (
                        SELECT CASE WHEN jsonb_typeof(value) = 'string' THEN value #>> '{}' END
                        FROM group_traits t
                        WHERE t.team_id = g.team_id AND t.group_id = g.group_id AND t.key_norm = 'name')
                    FROM (SELECT DISTINCT team_id, group_id FROM rekeyed) r
                    WHERE g.team_id = r.team_id AND g.group_id = r.group_id"""
            )
        op.execute("DROP TABLE rekeyed")

    columns = "team_id, event_id, key_norm, customer_id, key, value, event_time, tiebreak"
    op.execute(
        f"""CREATE TEMP TABLE rekeyed ON COMMIT DROP AS
            SELECT team_id, event_id, {NORM} AS key_norm, customer_id, key, value, event_time, tiebreak
            FROM trait_history WHERE key_norm <> {NORM}"""
    )
    op.execute(f"DELETE FROM trait_history WHERE key_norm <> {NORM}")
    op.execute(
        f"""INSERT INTO trait_history AS h ({columns})
            SELECT DISTINCT ON (team_id, event_id, key_norm) {columns} FROM rekeyed
            ORDER BY team_id, event_id, key_norm, key COLLATE "C"
            ON CONFLICT (team_id, event_id, key_norm) DO NOTHING"""
    )
    op.execute("DROP TABLE rekeyed")


def downgrade() -> None:
    # The old key_norms came from the database's locale; the new ones stay (both are keys).
    op.drop_column("tombstones", "received_at")
