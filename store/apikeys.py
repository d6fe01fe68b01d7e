"""API keys: creation, rotation, revocation, lookup by digest, and the audit list (SPEC §5).

A key is `tlk_` plus 32 base62 characters (190 random bits). Only its SHA-256 digest
is stored; a key has so much entropy that a slow hash would add nothing. The plaintext
is returned once, by the call that creates it. The displayed `prefix` is the first 12
characters; the 24 characters after it still carry 142 random bits.

Rotation never cuts a key at once unless asked: Segment keeps sending the old key until
the customer pastes the new one, and it does not retry a 401. The old key gets an
`expires_at` at the end of the grace period and keeps working until then.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from schemas.keys import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    SCOPES,
    ApiKeyCreatedSchema,
    ApiKeyRotatedSchema,
    ApiKeySchema,
)
from store.models import ApiKey, KeyAuditEntry, Team

log = logging.getLogger(__name__)

KEY_PREFIX = "tlk_"
SECRET_LENGTH = 32
DISPLAY_PREFIX_LENGTH = 12  # "tlk_" + 8 characters: enough to tell keys apart
_ALPHABET = string.ascii_letters + string.digits
# What new_secret makes, and so the only shape worth looking up (app/auth.py refuses any other).
KEY_FORMAT = re.compile(rf"{re.escape(KEY_PREFIX)}[A-Za-z0-9]{{{SECRET_LENGTH}}}")

DEFAULT_GRACE = timedelta(seconds=DEFAULT_GRACE_SECONDS)
MAX_GRACE = timedelta(seconds=MAX_GRACE_SECONDS)
# How often one process writes a key's last use: "about once a minute", never per request.
LAST_USED_INTERVAL = timedelta(minutes=1)

ACTIVE, EXPIRING, EXPIRED, REVOKED = "active", "expiring", "expired", "revoked"


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def key_status(key: ApiKey, now: datetime) -> str:
    """active, expiring (rotated, in its grace period), expired, or revoked."""
    if key.revoked_at is not None and key.revoked_at <= now:
        return REVOKED
    if key.expires_at is not None:
        return EXPIRING if now < key.expires_at else EXPIRED
    return ACTIVE


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


def record_key_uses(connection: Connection, uses: dict[int, datetime]) -> None:
    """Move each key's last_used_at forward to its latest use (never backward)."""
    if not uses:
        return
    connection.execute(
        update(ApiKey)
        .where(ApiKey.id == bindparam("used_key_id"))
        .values(last_used_at=func.greatest(ApiKey.last_used_at, bindparam("used_at"))),
        [{"used_key_id": key_id, "used_at": at} for key_id, at in uses.items()],
    )


@dataclass(frozen=True)
class AuthenticatedKey:
    """Who is calling: the key's team, id and scopes."""

    team_id: int
    key_id: int
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


def _stale(since: datetime | None, now: datetime, interval: timedelta) -> bool:
    # A clock that went backwards (only a test tool does that) counts as stale too.
    return since is None or not timedelta(0) <= now - since < interval


class KeyCache:
    """Digest -> key, kept in the process for at most `ttl` seconds; and keys' last use.

    Expiry is checked against the clock on every request, so it is exact. Revocation is
    seen once the entry is refreshed, within `ttl` (SPEC §5: within 1 second), and at once
    in the process that revoked (`forget_key`).

    last_used_at is kept here and written at most once per `last_used_every` per key by
    this process: a use is written when the key's previous write is that old, and a sweep
    as often writes the uses of keys that have gone quiet since. So the stored value lags
    real use by about a minute at most, and a request never waits on a write otherwise.
    """

    def __init__(self, engine: Engine, ttl: float = 0.5, last_used_every: timedelta = LAST_USED_INTERVAL):
        self.engine = engine
        self.ttl = ttl
        self.last_used_every = last_used_every
        self._entries: dict[str, tuple[float, AuthenticatedKey | None]] = {}
        self._lock = threading.Lock()
        # One load from Postgres at a time: when an entry expires, the requests in flight
        # wait for that one load instead of each loading the key (a herd that was 28% of a
        # web process's CPU under gevent, py-spy in bin/bench). Fresh entries never take it.
        self._loading = threading.Lock()
        self._unwritten: dict[int, datetime] = {}  # key id -> latest use not yet written
        self._written_at: dict[int, datetime] = {}  # key id -> when this process last wrote it
        self._last_sweep: datetime | None = None

    def lookup(self, secret: str) -> AuthenticatedKey | None:
        digest = key_digest(secret)
        cached = self._fresh(digest)
        if cached is None:
            with self._loading:
                cached = self._fresh(digest)  # another caller may have loaded it meanwhile
                if cached is None:
                    cached = (time.monotonic(), self._load(digest))
                    with self._lock:
                        if len(self._entries) > 10_000:  # unknown keys must not grow it without bound
                            self._entries.clear()
                        self._entries[digest] = cached
        found = cached[1]
        if found is not None:
            self._note_use(found, datetime.now(UTC))
        return found

    def _fresh(self, digest: str) -> tuple[float, AuthenticatedKey | None] | None:
        cached = self._entries.get(digest)
        if cached is not None and 0 <= time.monotonic() - cached[0] < self.ttl:
            return cached
        return None

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget_key(self, key_id: int) -> None:
        """Drop a key changed by this process, so the change applies here at once."""
        with self._lock:
            for digest in [d for d, (_, k) in self._entries.items() if k is not None and k.key_id == key_id]:
                del self._entries[digest]

    def flush_last_used(self) -> None:
        """Write every use not written yet (for a process that is about to stop)."""
        with self._lock:
            due, self._unwritten = self._unwritten, {}
        self._write_uses(due)

    def _note_use(self, key: AuthenticatedKey, now: datetime) -> None:
        if not key.usable_at(now):
            return
        every = self.last_used_every
        due: dict[int, datetime] = {}
        with self._lock:
            previous = self._unwritten.get(key.key_id)
            self._unwritten[key.key_id] = now if previous is None or now > previous else previous
            candidates = [key.key_id]
            if _stale(self._last_sweep, now, every):
                self._last_sweep = now
                candidates = list(self._unwritten)
                # A write older than the interval is as good as none: forget it.
                for key_id in [k for k, at in self._written_at.items() if _stale(at, now, every)]:
                    del self._written_at[key_id]
            for key_id in candidates:
                if _stale(self._written_at.get(key_id), now, every):
                    due[key_id] = self._unwritten.pop(key_id)
                    self._written_at[key_id] = now
        self._write_uses(due)

    def _write_uses(self, due: dict[int, datetime]) -> None:
        if not due:
            return
        try:
            with self.engine.begin() as connection:
                record_key_uses(connection, due)
        except SQLAlchemyError as error:
            # Only bookkeeping: keep the uses for the next write, never fail the request.
            log.warning("could not record last use of %d keys: %s", len(due), type(error).__name__)
            with self._lock:
                for key_id, at in due.items():
                    previous = self._unwritten.get(key_id)
                    if previous is None or at > previous:
                        self._unwritten[key_id] = at

    def _load(self, digest: str) -> AuthenticatedKey | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(ApiKey.team_id, ApiKey.id, ApiKey.scopes, ApiKey.expires_at, ApiKey.revoked_at).where(
                    ApiKey.digest == digest
                )
            ).first()
        if row is None:
            return None
        found = AuthenticatedKey(
            team_id=row.team_id,
            key_id=row.id,
            scopes=frozenset(row.scopes),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )
        log.debug("key cache loaded key=%s usable=%s", found.key_id, found.usable_at(datetime.now(UTC)))
        return found


# --- shapes shared by the keys API and the CLI-------------------------------------------------


def key_fields(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key as the API and the CLI show it: never its secret."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "status": key_status(key, now),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "rotated_from_id": key.rotated_from_id,
    }


def created_key_json(made: NewKey, now: datetime) -> dict[str, Any]:
    """A new key with its secret: the one answer that shows it."""
    data: dict[str, Any] = ApiKeyCreatedSchema().dump({**key_fields(made.key, now), "key": made.secret})
    return data


def rotated_key_json(rotation: Rotation, now: datetime) -> dict[str, Any]:
    """The new key with its secret, and under `rotated_from` the old key, now expiring."""
    data: dict[str, Any] = ApiKeyRotatedSchema().dump(
        {
            **key_fields(rotation.new.key, now),
            "key": rotation.new.secret,
            "rotated_from": key_fields(rotation.old, now),
        }
    )
    return data


def key_json(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key as listed: never its secret."""
    data: dict[str, Any] = ApiKeySchema().dump(key_fields(key, now))
    return data


def audit_fields(entry: KeyAuditEntry) -> dict[str, Any]:
    """An audit entry's fields for KeyAuditEntrySchema; the actor is 'cli' or 'key'."""
    return {
        "id": entry.id,
        "at": entry.at,
        "action": entry.action,
        "key_id": entry.key_id,
        "actor": "cli" if entry.actor_key_id is None else "key",
        "actor_key_id": entry.actor_key_id,
        "detail": entry.detail,
    }
