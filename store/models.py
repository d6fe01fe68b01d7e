"""The Postgres schema as typed SQLAlchemy 2 models.

Every table carries `team_id` and every unique key and hot index leads with it, so no
query crosses teams and the tables can be distributed by team (docs/scaling.md).
`teams` and `api_keys` are the exception by nature: a key is looked up by its digest
before its team is known; on Citus they would be reference tables.

Timestamps are set in Python (`datetime.now(UTC)`), never by `server_default=now()`,
so tests control them with freezegun.

Every table is declared here, whether or not code names its class: this metadata is what
alembic compares with the database, and `tests/test_migrations.py` checks that the
migrated schema matches it. The fold and the read side use most tables in SQL; a model
that no code names says so in its docstring, with the modules that use its table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Team(Base):
    """A customer of ours: one Segment workspace's destination.

    Key management locks the team's row (`SELECT ... FOR UPDATE`), so two admins
    revoking keys at once cannot leave the team without an active admin key.
    """

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ)


class ApiKey(Base):
    """A team's API key, stored only as a digest of the secret.

    `expires_at` is set by a rotation (the end of the grace period), `revoked_at` by a
    revoke; `last_used_at` is written by the web processes about once a minute at most.
    """

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(Text, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(TZ)
    last_used_at: Mapped[datetime | None] = mapped_column(TZ)
    expires_at: Mapped[datetime | None] = mapped_column(TZ)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ)
    rotated_from_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_api_keys_team_id_created_at", "team_id", "created_at"),
        CheckConstraint(
            "cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'read', 'admin']::text[]",
            name="ck_api_keys_scopes",
        ),
    )


class KeyAuditEntry(Base):
    """One create, rotate or revoke of a key, kept for the team's admins.

    `actor_key_id` is the admin key that made the change; NULL means the CLI.
    """

    __tablename__ = "key_audit"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    key_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(Text)
    actor_key_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(TZ)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        CheckConstraint("action IN ('create', 'rotate', 'revoke')", name="ck_key_audit_action"),
    )


class Event(Base):
    """A Segment event as received, and (once folded) the customer it belongs to.

    The stored events are also the timeline: the feed reads this table by
    (team_id, customer_id, event_time, tiebreak, id).
    """

    __tablename__ = "events"
    team_id: Mapped[int] = mapped_column(BigInteger)
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    event_name: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    anonymous_id: Mapped[str | None] = mapped_column(Text)
    group_id: Mapped[str | None] = mapped_column(Text)
    previous_id: Mapped[str | None] = mapped_column(Text)
    event_time: Mapped[datetime] = mapped_column(TZ)
    received_at: Mapped[datetime] = mapped_column(TZ)
    # Order of events with the same event time: a hash of (type, messageId), so the
    # timeline order does not depend on arrival order.
    tiebreak: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    folded_at: Mapped[datetime | None] = mapped_column(TZ)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        # Idempotency. A messageId that comes back with another type is another message:
        # Segment's own docs reuse one messageId across identify, screen and group samples.
        UniqueConstraint("team_id", "message_id", "type"),
        Index("ix_events_feed", "team_id", "customer_id", "event_time", "tiebreak", "id"),
        Index(
            "ix_events_unfolded",
            "team_id",
            "id",
            postgresql_where=text("folded_at IS NULL"),
        ),
        # A group's calls, to derive it again when a delete erases some (few rows: group
        # calls are rare beside track and page).
        Index("ix_events_group_calls", "team_id", "group_id", postgresql_where=text("type = 'group'")),
    )


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
    workers/resolve.py and workers/erase.py, read by store/customers.py, in SQL.
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
    workers/resolve.py and workers/erase.py, in SQL.
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
    tests/test_migrations.py checks against the migrations). The table is written by workers/derived.py
    and workers/erase.py, read by store/customers.py and app/console/data.py, in SQL.
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
    tests/test_migrations.py checks against the migrations). The table is written by workers/derived.py
    and workers/poison.py, read by store/groups.py and store/customers.py, in SQL.
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


class Tombstone(Base):
    """What is left of a deleted person: the ids, so older re-sends stay deleted.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by workers/erase.py,
    read by workers/erase.py and workers/poison.py, in SQL.
    """

    __tablename__ = "tombstones"
    team_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[datetime] = mapped_column(TZ)  # the delete event's time (placed: workers/erase.py)
    received_at: Mapped[datetime] = mapped_column(TZ)  # when that delete was received
    message_id: Mapped[str] = mapped_column(Text)

    __table_args__ = (PrimaryKeyConstraint("team_id", "kind", "value"),)


class TombstoneLink(Base):
    """An id an erased event linked to a deleted userId, so a later delete reaches it too.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    workers/erase.py, in SQL.
    """

    __tablename__ = "tombstone_links"
    team_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # "user" | "anonymous"
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (PrimaryKeyConstraint("team_id", "user_id", "kind", "value"),)


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


class IngestRejection(Base):
    """A refused event (or request) kept for the team's ingestion debugger.

    Bounded per team: `store/rejections.py` keeps the latest `MAX_KEPT` and stores at
    most a few per call, so a flood of junk is counted (`IngestCount`) rather than kept.
    `preview` is a truncated, key-free rendering of what was sent; `route` is the HTTP
    route or, for an import, the file (`line` its line number).

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written and read by
    store/rejections.py, in SQL.
    """

    __tablename__ = "ingest_rejections"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    at: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)  # "http" | "import"
    route: Mapped[str] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    preview: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "id"),
        CheckConstraint("source IN ('http', 'import')", name="ck_ingest_rejections_source"),
    )


class IngestCount(Base):
    """Events accepted, duplicated and refused per team, hour, source, type and code.

    `code` is '' for accepted and duplicate; `type` is a supported type, `other`, or
    `request` for a refusal of a whole request. Rows older than the summary's longest
    window are pruned as counts are added.
    """

    __tablename__ = "ingest_counts"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    hour: Mapped[datetime] = mapped_column(TZ)
    source: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("team_id", "hour", "source", "type", "outcome", "code"),
        CheckConstraint("outcome IN ('accepted', 'duplicate', 'refused')", name="ck_ingest_counts_outcome"),
    )


class FoldFailure(Base):
    """An event the fold could not fold, set aside with its error so the team's others fold.

    The event itself is marked folded (`folded_at`, no customer): the batch selection, the
    sweep and the backlog skip it. No foreign key to `events`: bulk loads drop and rebuild
    its primary key (bench/); whoever erases a set-aside event removes its row too.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by workers/poison.py,
    workers/erase.py and store/fold_failures.py (a retry), read by store/fold_failures.py and
    workers/derived.py, in SQL.
    """

    __tablename__ = "fold_failures"
    team_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)
    error_class: Mapped[str] = mapped_column(Text)  # the driver's exception class
    sqlstate: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(TZ)

    __table_args__ = (PrimaryKeyConstraint("team_id", "event_id"),)


# Profile API state (SPEC §4; migration 0007)


class TraitHistory(Base):
    """What one event set for one trait of its customer: the feed's `changes` read it.

    The previous value of a trait at an event is the row of the same customer and key
    just before it by (event time, tiebreak): one probe of `ix_trait_history_previous`,
    whatever order the events arrived in.

    Schema only: no code names this class; it declares the table for alembic's metadata (which
    tests/test_migrations.py checks against the migrations). The table is written by workers/derived.py
    and workers/erase.py, read by store/feed.py and store/customers.py, in SQL.
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
