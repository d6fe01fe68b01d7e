"""Alembic environment: DATABASE_URL, with lock and statement timeouts.

The timeouts keep a migration from queueing behind (and then blocking) live traffic:
it fails fast instead, and the release step can be retried.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, text

from service.settings import sqlalchemy_url
from store.models import Base
from store.partitions import include_object

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or sqlalchemy_url(os.environ["DATABASE_URL"])
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '4s'"))
        connection.execute(text("SET statement_timeout = '5min'"))
        connection.commit()
        # One migrator at a time, even with several release steps racing. A session lock:
        # a migration may commit in steps (0012's autocommit block).
        connection.execute(text("SELECT pg_advisory_lock(74321)"))
        connection.commit()
        context.configure(
            connection=connection, target_metadata=target_metadata, include_object=include_object
        )
        try:
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(74321)"))
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(os.environ["DATABASE_URL"]), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
