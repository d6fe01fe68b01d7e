"""Customers and what the fold derives for them: identities, anonymous claims, aliases,
traits, trait history and per-name event summaries (written by `store/fold/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from store.models.base import TZ, Base


class Customer(Base):
    """One person (or one anonymous visitor) of a team, with derived profile fields."""

    __tablename__ = "customers"
    team_id: Mapped[int] = mapped_column(BigInteger)
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    merged_into: Mapped[int | None] = mapped_column(BigInteger)
    is_known: Mapped[bool] = mapped_column(Boolean, default=False)
    email: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime | None] = mapped_column(TZ)
    last_seen: Mapped[datetime | None] = mapped_column(TZ)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        Index(
            "ix_customers_recent",
            "team_id",
            text("last_seen DESC NULLS LAST"),
            text("id DESC"),
            postgresql_where=text("merged_into IS NULL"),
        ),
        Index(
            "ix_customers_email_prefix",
            "team_id",
            text("lower(email) text_pattern_ops"),
            postgresql_where=text("merged_into IS NULL"),
        ),
        Index(
            "ix_customers_name_prefix",
            "team_id",
            text("lower(name) text_pattern_ops"),
            postgresql_where=text("merged_into IS NULL"),
        ),
        # The customers merged into one, re-pointed when that one is merged in turn.
        Index(
            "ix_customers_merged_into",
            "team_id",
            "merged_into",
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
    )


class CustomerIdentity(Base):
    """A userId or anonymousId and the customer it resolves to.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    store/fold/resolve.py and store/fold/erase.py, read by store/customers.py, in SQL.
    """

    __tablename__ = "identities"
    team_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text)  # "user" | "anonymous"
    value: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "kind", "value"),
        Index("ix_identities_customer", "team_id", "customer_id"),
        Index("ix_identities_value_prefix", "team_id", text("lower(value) text_pattern_ops")),
    )


class AnonymousClaim(Base):
    """An anonymousId seen together with a userId; the earliest claim owns the visitor.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    store/fold/resolve.py and store/fold/erase.py, in SQL.
    """

    __tablename__ = "anonymous_claims"
    team_id: Mapped[int] = mapped_column(BigInteger)
    anonymous_id: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    first_at: Mapped[datetime] = mapped_column(TZ)
    first_tiebreak: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "anonymous_id", "user_id"),
        Index("ix_anonymous_claims_user", "team_id", "user_id"),
    )


class Alias(Base):
    """An alias call: previousId and userId are the same person."""

    __tablename__ = "aliases"
    team_id: Mapped[int] = mapped_column(BigInteger)
    previous_id: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    first_at: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "previous_id", "user_id"),
        Index("ix_aliases_user", "team_id", "user_id"),
    )


class CustomerTrait(Base):
    """One trait of a customer; the value from the latest event time wins.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by store/fold/derived.py
    and store/fold/erase.py, read by store/customers.py and app/console/data.py, in SQL.
    """

    __tablename__ = "customer_traits"
    team_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    key_norm: Mapped[str] = mapped_column(Text)  # firstName, first_name -> firstname
    key: Mapped[str] = mapped_column(Text)  # as the winning event spelled it
    value: Mapped[Any] = mapped_column(JSONB)
    event_time: Mapped[datetime] = mapped_column(TZ)
    tiebreak: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (PrimaryKeyConstraint("team_id", "customer_id", "key_norm"),)


class TraitHistory(Base):
    """What one event set for one trait of its customer: the feed's `changes` read it.

    The previous value of a trait at an event is the row of the same customer and key
    just before it by (event time, tiebreak): one probe of `ix_trait_history_previous`,
    whatever order the events arrived in.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by store/fold/derived.py
    and store/fold/erase.py, read by store/feed.py and store/customers.py, in SQL.
    """

    __tablename__ = "trait_history"
    team_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)
    key_norm: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONB)
    event_time: Mapped[datetime] = mapped_column(TZ)
    tiebreak: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "event_id", "key_norm"),
        Index("ix_trait_history_previous", "team_id", "customer_id", "key_norm", "event_time", "tiebreak"),
    )


class EventSummary(Base):
    """Per customer, per track event name and per page or screen name: count, first, last.

    `name` is '' for a page or screen without a name (the API shows null).
    """

    __tablename__ = "event_summaries"
    team_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    event_count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(TZ)
    last_at: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (PrimaryKeyConstraint("team_id", "customer_id", "type", "name"),)
