"""Groups, their traits and their members (written by `store/fold/derived.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    PrimaryKeyConstraint,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class Group(Base):
    """A company (Segment group) of a team."""

    __tablename__ = "groups"
    team_id: Mapped[int] = mapped_column(BigInteger)
    group_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(TZ)
    last_seen: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (PrimaryKeyConstraint("team_id", "group_id"),)


class GroupTrait(Base):
    """One trait of a group; the value from the latest event time wins.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by
    store/fold/derived.py (also for workers/poison.py), read by store/groups.py and
    store/customers.py, in SQL.
    """

    __tablename__ = "group_traits"
    team_id: Mapped[int] = mapped_column(BigInteger)
    group_id: Mapped[str] = mapped_column(Text)
    key_norm: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONB)
    event_time: Mapped[datetime] = mapped_column(TZ)
    tiebreak: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (PrimaryKeyConstraint("team_id", "group_id", "key_norm"),)


class Membership(Base):
    """A customer's membership of a group."""

    __tablename__ = "memberships"
    team_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    group_id: Mapped[str] = mapped_column(Text)
    # The earliest joining call (NULL while only a leaving one is known).
    joined_at: Mapped[datetime | None] = mapped_column(TZ)
    last_seen: Mapped[datetime] = mapped_column(TZ)
    # The latest (event time, tiebreak) joining or leaving call decides (migration 0007).
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    state_at: Mapped[datetime | None] = mapped_column(TZ)
    state_tiebreak: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "customer_id", "group_id"),
        Index("ix_memberships_group", "team_id", "group_id"),
    )


# Read-path indexes
#
# Indexes for the agents' read API (SPEC §4, docs/read-api.md), beside the ones the
# tables declare (ix_events_feed, ix_customers_recent, the lower(...) text_pattern_ops
# prefix indexes). Created by migration 0003.

# A group's members, paged by (joined_at, customer_id) without sorting the group.
Index(
    "ix_memberships_group_joined",
    Membership.team_id,
    Membership.group_id,
    Membership.joined_at,
    Membership.customer_id,
)
