"""A key's life: a team and its first admin key, keys created, rotated (the old key kept
for a grace period) and revoked, each change audited, and the lookups the keys API and
the CLI make (SPEC §5).

Rotation never cuts a key at once unless asked: Segment keeps sending the old key until
the customer pastes the new one, and it does not retry a 401. The old key gets an
`expires_at` at the end of the grace period and keeps working until then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update

from schemas.keys import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS, SCOPES
from store.apikeys.material import (
    ACTIVE,
    DISPLAY_PREFIX_LENGTH,
    EXPIRED,
    EXPIRING,
    REVOKED,
    key_digest,
    key_status,
    new_secret,
)
from store.models import ApiKey, KeyAuditEntry, Team

log = logging.getLogger("store.apikeys")

DEFAULT_GRACE = timedelta(seconds=DEFAULT_GRACE_SECONDS)
MAX_GRACE = timedelta(seconds=MAX_GRACE_SECONDS)


class KeyManagementError(Exception):
    """A key change that cannot be made; `code` is the API's machine code."""

    code = "key_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class TeamNotFound(KeyManagementError):
    code = "team_not_found"


class KeyNotFound(KeyManagementError):
    code = "not_found"


class KeyNotActive(KeyManagementError):
    code = "key_not_active"


class LastAdminKey(KeyManagementError):
    code = "last_admin_key"


class ActingKeyRefused(KeyManagementError):
    """The admin key making the change is revoked, expired or expiring now (checked in the
    transaction that acts, so a revocation committed before it always wins)."""

    code = "invalid_key"


class ActingKeyExpiring(ActingKeyRefused):
    code = "key_expiring"


@dataclass(frozen=True)
class NewKey:
    """A key just made: its row and the plaintext, which is never shown again."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class Rotation:
    """The old key (now expiring or expired) and its replacement."""

    old: ApiKey
    new: NewKey
    grace: timedelta


def _checked_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if unknown or not chosen:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}, not {chosen}")
    return chosen


def _insert_key(
    connection: Connection,
    team_id: int,
    name: str,
    scopes: list[str],
    now: datetime,
    rotated_from_id: int | None = None,
) -> NewKey:
    secret = new_secret()
    row = connection.execute(
        insert(ApiKey)
        .values(
            team_id=team_id,
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            digest=key_digest(secret),
            scopes=scopes,
            created_at=now,
            rotated_from_id=rotated_from_id,
        )
        .returning(*ApiKey.__table__.c)
    ).one()
    return NewKey(key=ApiKey(**row._asdict()), secret=secret)


def _lock_team(connection: Connection, team_id: int) -> None:
    """Serialise a team's key changes: the last-admin-key check must not race."""
    found = connection.execute(select(Team.id).where(Team.id == team_id).with_for_update()).first()
    if found is None:
        raise TeamNotFound(f"No team with id {team_id}.")


def check_acting_key(connection: Connection, team_id: int, actor_key_id: int, now: datetime) -> None:
    """Refuse the change unless the acting key is, right now, an active admin key of the team.

    Called after `_lock_team`, in the transaction that acts: the key's row is read (and
    locked) from Postgres, never from the cache, so a key revoked, expired or rotated
    before this statement cannot act, however long ago its request was authenticated.
    """
    key = find_key(connection, team_id, actor_key_id, for_update=True)
    status = key_status(key, now) if key is not None else REVOKED
    if key is None or status in (REVOKED, EXPIRED):
        raise ActingKeyRefused(
            "The API key is unknown, expired or revoked; copy a current key from your settings."
        )
    if status == EXPIRING:
        raise ActingKeyExpiring(
            "This key was rotated: during its grace period it only sends events (ingest). "
            "Use its replacement to manage keys."
        )
    if "admin" not in key.scopes:
        raise ActingKeyRefused("This API key lacks the 'admin' scope; use a key that has it.")


def _lock_for_change(connection: Connection, team_id: int, actor_key_id: int | None, now: datetime) -> None:
    _lock_team(connection, team_id)
    if actor_key_id is not None:  # None: the CLI, an operator on the machine
        check_acting_key(connection, team_id, actor_key_id, now)


def create_key(
    connection: Connection,
    team_id: int,
    name: str,
    scopes: Iterable[str],
    now: datetime,
    *,
    actor_key_id: int | None = None,
) -> NewKey:
    """Create a key for a team and record it in the audit list."""
    chosen = _checked_scopes(scopes)
    _lock_for_change(connection, team_id, actor_key_id, now)
    made = _insert_key(connection, team_id, name, chosen, now)
    record_audit(
        connection,
        team_id,
        made.key.id,
        "create",
        now,
        actor_key_id=actor_key_id,
        detail={"name": name, "scopes": chosen, "prefix": made.key.prefix},
    )
    log.info("key created: team=%s key=%s prefix=%s", team_id, made.key.id, made.key.prefix)
    return made


def record_audit(
    connection: Connection,
    team_id: int,
    key_id: int,
    action: str,
    now: datetime,
    *,
    actor_key_id: int | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    connection.execute(
        insert(KeyAuditEntry).values(
            team_id=team_id,
            key_id=key_id,
            action=action,
            actor_key_id=actor_key_id,
            at=now,
            detail=detail or {},
        )
    )


def create_team(connection: Connection, name: str, now: datetime) -> tuple[Team, NewKey]:
    """A new team and its first key, with every scope."""
    row = connection.execute(insert(Team).values(name=name, created_at=now).returning(Team)).one()
    team = Team(**row._asdict())
    return team, create_key(connection, team.id, "admin", SCOPES, now)


def find_key(connection: Connection, team_id: int, key_id: int, *, for_update: bool = False) -> ApiKey | None:
    """One of the team's keys; another team's key is not found."""
    query = select(*ApiKey.__table__.c).where(ApiKey.team_id == team_id, ApiKey.id == key_id)
    if for_update:
        query = query.with_for_update()
    row = connection.execute(query).first()
    return ApiKey(**row._asdict()) if row is not None else None


def team_exists(connection: Connection, team_id: int) -> bool:
    return connection.execute(select(Team.id).where(Team.id == team_id)).first() is not None


def team_of_key(connection: Connection, key_id: int) -> int | None:
    """The team a key belongs to (for the CLI, which names keys by id alone)."""
    found: int | None = connection.execute(select(ApiKey.team_id).where(ApiKey.id == key_id)).scalar()
    return found


def list_keys(
    connection: Connection, team_id: int, *, limit: int | None = None, before_id: int | None = None
) -> list[ApiKey]:
    """The team's keys, newest first, from before `before_id` (a keyset cursor)."""
    query = select(*ApiKey.__table__.c).where(ApiKey.team_id == team_id)
    if before_id is not None:
        query = query.where(ApiKey.id < before_id)
    query = query.order_by(ApiKey.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [ApiKey(**row._asdict()) for row in connection.execute(query)]


def list_audit(
    connection: Connection, team_id: int, *, limit: int | None = None, before_id: int | None = None
) -> list[KeyAuditEntry]:
    """The team's key audit entries, newest first, from before `before_id`."""
    query = select(*KeyAuditEntry.__table__.c).where(KeyAuditEntry.team_id == team_id)
    if before_id is not None:
        query = query.where(KeyAuditEntry.id < before_id)
    query = query.order_by(KeyAuditEntry.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [KeyAuditEntry(**row._asdict()) for row in connection.execute(query)]


def _update_key(connection: Connection, key_id: int, **values: object) -> ApiKey:
    row = connection.execute(
        update(ApiKey).where(ApiKey.id == key_id).values(**values).returning(*ApiKey.__table__.c)
    ).one()
    return ApiKey(**row._asdict())


def rotate_key(
    connection: Connection,
    team_id: int,
    key_id: int,
    now: datetime,
    *,
    grace: timedelta = DEFAULT_GRACE,
    actor_key_id: int | None = None,
) -> Rotation:
    """A new key with the same name and scopes; the old one works until now + grace.

    Only an active key can be rotated: an expiring one already has its successor.
    Rotating the last admin key is fine, because its successor is an admin key.
    """
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise ValueError(f"grace must be between 0 and {MAX_GRACE}, not {grace}")
    _lock_for_change(connection, team_id, actor_key_id, now)
    key = find_key(connection, team_id, key_id, for_update=True)
    if key is None:
        raise KeyNotFound(f"No key with id {key_id} in this team.")
    status = key_status(key, now)
    if status != ACTIVE:
        raise KeyNotActive(
            f"Key {key_id} is {status}; only an active key can be rotated. "
            "Rotate its replacement instead, or create a new key."
        )
    expires_at = now + grace
    old = _update_key(connection, key.id, expires_at=expires_at)
    new = _insert_key(connection, team_id, key.name, list(key.scopes), now, rotated_from_id=key.id)
    record_audit(
        connection,
        team_id,
        key.id,
        "rotate",
        now,
        actor_key_id=actor_key_id,
        detail={
            "name": key.name,
            "scopes": list(key.scopes),
            "prefix": key.prefix,
            "new_key_id": str(new.key.id),
            "new_prefix": new.key.prefix,
            "grace_seconds": int(grace.total_seconds()),
            "expires_at": expires_at.isoformat(),
        },
    )
    log.info(
        "key rotated: team=%s key=%s new_key=%s grace_seconds=%d",
        team_id,
        key.id,
        new.key.id,
        int(grace.total_seconds()),
    )
    return Rotation(old=old, new=new, grace=grace)


def revoke_key(
    connection: Connection, team_id: int, key_id: int, now: datetime, *, actor_key_id: int | None = None
) -> ApiKey:
    """Revoke a key at once. Revoking a revoked key changes nothing.

    Refused for the team's last active admin key: without one nobody could manage keys.
    """
    _lock_for_change(connection, team_id, actor_key_id, now)
    key = find_key(connection, team_id, key_id, for_update=True)
    if key is None:
        raise KeyNotFound(f"No key with id {key_id} in this team.")
    if key.revoked_at is not None:
        return key
    if "admin" in key.scopes and key_status(key, now) == ACTIVE:
        other_admin = connection.execute(
            select(ApiKey.id)
            .where(
                ApiKey.team_id == team_id,
                ApiKey.id != key.id,
                ApiKey.scopes.any_() == "admin",
                ApiKey.revoked_at.is_(None),
                ApiKey.expires_at.is_(None),
            )
            .limit(1)
        ).first()
        if other_admin is None:
            raise LastAdminKey(
                f"Key {key_id} is the team's last active admin key; create or rotate to "
                "another admin key before revoking it."
            )
    revoked = _update_key(connection, key.id, revoked_at=now)
    record_audit(
        connection,
        team_id,
        key.id,
        "revoke",
        now,
        actor_key_id=actor_key_id,
        detail={"name": key.name, "scopes": list(key.scopes), "prefix": key.prefix},
    )
    log.info("key revoked: team=%s key=%s", team_id, key.id)
    return revoked
