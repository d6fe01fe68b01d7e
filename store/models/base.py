"""The Postgres schema as typed SQLAlchemy 2 models: the declarative base and its conventions.

Every table carries `team_id` and every unique key and hot index leads with it, so no
query crosses teams and the tables can be distributed by team (docs/scaling.md).
`teams` and `api_keys` are the exception by nature: a key is looked up by its digest
before its team is known; on Citus they would be reference tables.

Timestamps are set in Python (`datetime.now(UTC)`), never by `server_default=now()`,
so tests control them with freezegun.

Every table is declared in this package, whether or not code names its class: this metadata is what
alembic compares with the database, and `tests/test_migrations.py` checks that the
migrated schema matches it. The fold and the read side use most tables in SQL; a model
that no code names says so in its docstring, with the modules that use its table.
"""

from __future__ import annotations

from sqlalchemy import DateTime, MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
