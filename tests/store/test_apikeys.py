"""Keys in Postgres and in a web process's cache, without HTTP (SPEC §5).

The cache tests use real time: the cache's TTL runs on `time.monotonic`, which freezegun
would freeze. A second `KeyCache` on the same database stands for another web process.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from store.apikeys import (
    DISPLAY_PREFIX_LENGTH,
    KEY_FORMAT,
    SECRET_LENGTH,
    KeyCache,
    LastAdminKey,
    create_key,
    create_team,
    find_key,
    key_status,
    new_secret,
    record_key_uses,
    revoke_key,
    rotate_key,
)
from tests.conftest import make_team

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def test_a_key_has_a_prefix_and_over_128_secret_bits() -> None:
    made = {new_secret() for _ in range(1000)}
    assert len(made) == 1000
    assert all(s.startswith("tlk_") and len(s) == 4 + SECRET_LENGTH and s[4:].isalnum() for s in made)
    assert KEY_FORMAT.pattern == "tlk_[A-Za-z0-9]{32}"
    assert all(KEY_FORMAT.fullmatch(s) for s in made)
    hidden_characters = 4 + SECRET_LENGTH - DISPLAY_PREFIX_LENGTH  # what the listed prefix does not show
    assert hidden_characters * math.log2(62) >= 128


def test_statuses_follow_the_clock(engine: Engine) -> None:
    with engine.begin() as connection:
        team, admin = create_team(connection, "statuses", T0)
        made = create_key(connection, team.id, "Segment", ["ingest"], T0)
        rotation = rotate_key(connection, team.id, made.key.id, T0, grace=timedelta(hours=1))
        revoked = revoke_key(connection, team.id, rotation.new.key.id, T0 + timedelta(minutes=1))
    assert key_status(made.key, T0) == "active"
    assert key_status(rotation.old, T0 + timedelta(minutes=59)) == "expiring"
    assert key_status(rotation.old, T0 + timedelta(hours=1)) == "expired"
    assert key_status(revoked, T0 + timedelta(minutes=1)) == "revoked"
    assert key_status(admin.key, T0 + timedelta(days=365)) == "active"


def test_postgres_refuses_an_unknown_scope(engine: Engine) -> None:
    team = make_team(engine)
    with pytest.raises(ValueError):
        with engine.begin() as connection:
            create_key(connection, team.id, "bad", ["write"], now())
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (team_id, name, prefix, digest, scopes, created_at) "
                "VALUES (:team, 'bad', 'tlk_x', 'd-bad', ARRAY['write'], now())"
            ),
            {"team": team.id},
        )


def test_cache_sees_a_revocation_by_another_process_within_a_second(engine: Engine) -> None:
    team = make_team(engine)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "Segment", ["ingest"], now())
    cache = KeyCache(engine)  # this process, with the production TTL of 0.5 s
    found = cache.lookup(made.secret)
    assert found is not None and found.usable_at(now())

    with engine.begin() as connection:  # another process revokes it
        revoke_key(connection, team.id, made.key.id, now())
    revoked_at = time.monotonic()
    while time.monotonic() < revoked_at + 1.0:
        found = cache.lookup(made.secret)
        if found is not None and not found.usable_at(now()):
            break
        time.sleep(0.02)
    found = cache.lookup(made.secret)
    assert found is not None and not found.usable_at(now())


def test_the_revoking_process_forgets_the_key_at_once(engine: Engine) -> None:
    team = make_team(engine)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "Segment", ["ingest"], now())
    cache = KeyCache(engine, ttl=3600)  # would otherwise serve the entry for an hour
    assert cache.lookup(made.secret) is not None
    with engine.begin() as connection:
        revoke_key(connection, team.id, made.key.id, now())
    cached = cache.lookup(made.secret)
    assert cached is not None and cached.usable_at(now())  # the cache is real: still the old entry
    cache.forget_key(made.key.id)
    found = cache.lookup(made.secret)
    assert found is not None and not found.usable_at(now())


def test_expiry_applies_to_a_cached_key_without_a_refresh(engine: Engine) -> None:
    team = make_team(engine)
    with freeze_time(T0) as clock:
        with engine.begin() as connection:
            made = create_key(connection, team.id, "Segment", ["ingest"], now())
            rotate_key(connection, team.id, made.key.id, now(), grace=timedelta(seconds=10))
        cache = KeyCache(engine, ttl=3600)
        found = cache.lookup(made.secret)
        assert found is not None and found.usable_at(now())
        clock.tick(timedelta(seconds=10))
        assert cache.lookup(made.secret) is found  # served from the cache...
        assert not found.usable_at(now())  # ...and refused by the clock


def test_unknown_key_is_not_found(engine: Engine) -> None:
    assert KeyCache(engine).lookup(new_secret()) is None


def test_last_used_is_kept_per_process_and_never_goes_back(engine: Engine) -> None:
    team = make_team(engine)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "Segment", ["ingest"], now())

    def last_used() -> datetime | None:
        with engine.connect() as connection:
            key = find_key(connection, team.id, made.key.id)
        assert key is not None
        return key.last_used_at

    with freeze_time(T0) as clock:
        web_1, web_2 = KeyCache(engine), KeyCache(engine)
        web_1.lookup(made.secret)
        assert last_used() == T0
        clock.tick(timedelta(seconds=20))
        web_1.lookup(made.secret)
        assert last_used() == T0  # web_1 wrote less than a minute ago
        web_2.lookup(made.secret)
        assert last_used() == T0 + timedelta(seconds=20)  # web_2's first write
        clock.tick(timedelta(seconds=50))
        web_2.lookup(made.secret)  # 50 s after web_2's write: kept in memory
        assert last_used() == T0 + timedelta(seconds=20)
        web_2.flush_last_used()
        assert last_used() == T0 + timedelta(seconds=70)

    with engine.begin() as connection:  # a slow process writing an older use changes nothing
        record_key_uses(connection, {made.key.id: T0})
    assert last_used() == T0 + timedelta(seconds=70)


def test_a_revoked_or_expired_key_is_not_marked_used(engine: Engine) -> None:
    team = make_team(engine)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "Segment", ["ingest"], now())
        revoke_key(connection, team.id, made.key.id, now())
    KeyCache(engine).lookup(made.secret)
    with engine.connect() as connection:
        key = find_key(connection, team.id, made.key.id)
    assert key is not None and key.last_used_at is None


def test_two_admins_revoking_each_others_keys_at_once_leave_one(engine: Engine) -> None:
    """The team row lock makes the last-admin check safe under concurrency."""
    team = make_team(engine)
    with engine.begin() as connection:
        second = create_key(connection, team.id, "second admin", ["admin"], now())
        first_id = connection.execute(
            text("SELECT id FROM api_keys WHERE team_id = :t AND name = 'admin'"), {"t": team.id}
        ).scalar_one()

    outcome: dict[str, object] = {}

    def revoke_second() -> None:
        try:
            with engine.begin() as connection:
                revoke_key(connection, team.id, second.key.id, now())
            outcome["second"] = "revoked"
        except LastAdminKey:
            outcome["second"] = "refused"

    with engine.begin() as connection:
        revoke_key(connection, team.id, first_id, now())  # not committed yet
        racer = threading.Thread(target=revoke_second)
        racer.start()
        racer.join(timeout=0.3)
        assert racer.is_alive()  # waiting on the team's lock
    racer.join(timeout=10)
    assert outcome == {"second": "refused"}
    with engine.connect() as connection:
        active_admins = connection.execute(
            text(
                "SELECT count(*) FROM api_keys WHERE team_id = :t AND 'admin' = ANY(scopes) "
                "AND revoked_at IS NULL AND expires_at IS NULL"
            ),
            {"t": team.id},
        ).scalar_one()
    assert active_admins == 1
