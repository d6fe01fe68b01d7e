"""events.raw compressed with lz4 where the server has it

Measured with `bin/bench --only storage` (docs/benchmarks.md, docs/scaling.md): Postgres
compresses a value only in a row over about 2 KB (TOAST_TUPLE_THRESHOLD, fixed when
Postgres is built; `toast_tuple_target` moves the size Postgres shrinks such a row to,
not the size at which it starts), so most events, whose raw payload is 0.4 to 1.4 KB,
are stored as sent whatever the settings, and the larger ones come out of pglz and lz4
about the same size (1,092 and 1,124 B on the real clients' sample). lz4 is the
faster (a whole 28,000-row insert of 1.7 KB payloads: 1.1 to 1.6 s against 2.0 to
3.0 s with pglz), so ingest of large events costs less, for no bytes.

A server built without lz4 (the embedded Postgres 16 the tests use) keeps pglz: the
setting is skipped there. Only values written from now on use it: no rewrite, a
catalog change under a brief lock.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LZ4_SUPPORTED = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def upgrade() -> None:
    if op.get_bind().execute(text(LZ4_SUPPORTED)).scalar():
        op.execute("ALTER TABLE events ALTER COLUMN raw SET COMPRESSION lz4")


def downgrade() -> None:
    op.execute("ALTER TABLE events ALTER COLUMN raw SET COMPRESSION default")
