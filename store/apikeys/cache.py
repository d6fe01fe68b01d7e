"""Keys as the request path sees them: a per-process cache from digest to key (revocation
seen within its ttl, expiry exact), and each key's last use, written about once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from store.apikeys.material import key_digest
from store.models import ApiKey

log = logging.getLogger("store.apikeys")

# How often one process writes a key's last use: "about once a minute", never per request.
LAST_USED_INTERVAL = timedelta(minutes=1)


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
