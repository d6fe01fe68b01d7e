"""API keys: creation, lookup by digest, and the scopes they carry.

A key is `tlk_` plus 32 base62 characters (190 random bits). Only its SHA-256 digest
is stored; a key has so much entropy that a slow hash would add nothing. The plaintext
is returned once, by the call that creates it.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from store.models import ApiKey, KeyAuditEntry, Team

KEY_PREFIX = "tlk_"
SECRET_LENGTH = 32
DISPLAY_PREFIX_LENGTH = 12  # "tlk_" + 8 characters: enough to tell keys apart
SCOPES = ("ingest", "read", "admin")
_ALPHABET = string.ascii_letters + string.digits


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A key just made: its row and the plaintext, which is never shown again."""

    key: ApiKey
    secret: str


def create_key(
    connection: Connection,
    team_id: int,
    name: str,
    scopes: Iterable[str],
    now: datetime,
    *,
    actor_key_id: int | None = None,
    rotated_from_id: int | None = None,
    audit_action: str = "create",
) -> NewKey:
    """Create a key for a team and record it in the audit list."""
    secret = new_secret()
    row = connection.execute(
        insert(ApiKey)
        .values(
            team_id=team_id,
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            digest=key_digest(secret),
            scopes=sorted(set(scopes)),
            created_at=now,
            rotated_from_id=rotated_from_id,
        )
        .returning(ApiKey)
    ).one()
    key = ApiKey(**row._asdict())
    record_audit(
        connection,
        team_id,
        key.id,
        audit_action,
        now,
        actor_key_id=actor_key_id,
        detail={"name": name, "scopes": key.scopes},
    )
    return NewKey(key=key, secret=secret)


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


class KeyCache:
    """Digest -> key, kept in the process for at most `ttl` seconds.

    Expiry is checked against the clock on every request, so it is exact. Revocation is
    seen once the entry is refreshed, within `ttl` (SPEC §5: within 1 second).
    """

    def __init__(self, engine: Engine, ttl: float = 0.5):
        self.engine = engine
        self.ttl = ttl
        self._entries: dict[str, tuple[float, AuthenticatedKey | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, secret: str) -> AuthenticatedKey | None:
        digest = key_digest(secret)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        found = self._load(digest)
        with self._lock:
            if len(self._entries) > 10_000:  # unknown keys must not grow it without bound
                self._entries.clear()
            self._entries[digest] = (now, found)
        return found

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()

    def _load(self, digest: str) -> AuthenticatedKey | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(ApiKey.team_id, ApiKey.id, ApiKey.scopes, ApiKey.expires_at, ApiKey.revoked_at).where(
                    ApiKey.digest == digest
                )
            ).first()
        if row is None:
            return None
        return AuthenticatedKey(
            team_id=row.team_id,
            key_id=row.id,
            scopes=frozenset(row.scopes),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )
