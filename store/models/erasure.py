"""Tombstones of deleted people and the links a later delete follows (`store/fold/erase.py`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    PrimaryKeyConstraint,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class Tombstone(Base):
    """What is left of a deleted person: the ids, so older re-sends stay deleted.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by store/fold/erase.py,
    read by store/fold/erase.py and store/fold_failures.py, in SQL.
    """

    __tablename__ = "tombstones"
    team_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[datetime] = mapped_column(TZ)  # the delete event's time (placed: store/fold/erase.py)
    received_at: Mapped[datetime] = mapped_column(TZ)  # when that delete was received
    message_id: Mapped[str] = mapped_column(Text)

    __table_args__ = (PrimaryKeyConstraint("team_id", "kind", "value"),)


class TombstoneLink(Base):
    """An id an erased event linked to a deleted userId, so a later delete reaches it too.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    store/fold/erase.py, in SQL.
    """

    __tablename__ = "tombstone_links"
    team_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # "user" | "anonymous"
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (PrimaryKeyConstraint("team_id", "user_id", "kind", "value"),)
