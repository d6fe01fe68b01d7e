"""Poison events: bounded at ingest where a rule exists; set aside by the fold otherwise.

The stored-event cases bypass ingest (they write the raw event as an old stored event,
accepted before the bound, would be), then fold: the team's other events must fold and
the poison one be set aside with its error, never stall the team.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from schemas.trait_keys import MAX_PROFILE_TRAIT
from store.fold.backlog import FOLD_LOCK_NAMESPACE
from tests.conftest import TeamKeys
from tests.workers.hostile import HUGE, failures, incompressible, poisoned
from tests.workers.support import customer_of, event, new_team, store
from workers.fold import fold_pending, fold_until_empty


def backlog(engine: Engine, team_id: int) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM events WHERE team_id = :t AND folded_at IS NULL"), {"t": team_id}
            ).scalar_one()
        )


def profile(engine: Engine, team_id: int, user: str) -> tuple[str | None, int]:
    customer = customer_of(engine, team_id, "user", user)
    assert customer is not None, f"{user} was not folded"
    with engine.connect() as connection:
        email, count = connection.execute(
            text("SELECT email, event_count FROM customers WHERE team_id = :t AND id = :c"),
            {"t": team_id, "c": customer},
        ).one()
    return email, int(count)


def test_a_huge_email_trait_is_set_aside_and_the_teams_other_events_fold(engine: Engine) -> None:
    team_id = new_team(engine)
    events = [event("track", f"before-{n}", n, userId="ann") for n in range(5)]
    events += [poisoned("poison", 10, "ann", email=HUGE)]
    events += [event("identify", "bob-1", 11, userId="bob", traits={"email": "bob@example.com"})]
    events += [event("track", f"after-{n}", 20 + n, userId="ann") for n in range(5)]
    store(engine, team_id, events)

    assert fold_until_empty(engine, team_id, batch_size=1000) == len(events)

    assert backlog(engine, team_id) == 0
    [(message_id, sqlstate, message)] = failures(engine, team_id)
    assert message_id == "poison"
    assert sqlstate == "54000"
    assert "ix_customers_email_prefix" in message
    assert profile(engine, team_id, "ann") == (None, 10)  # every event but the poison one
    assert profile(engine, team_id, "bob") == ("bob@example.com", 1)
    with engine.connect() as connection:
        poison = connection.execute(
            text("SELECT customer_id, folded_at FROM events WHERE team_id = :t AND message_id = 'poison'"),
            {"t": team_id},
        ).one()
    assert poison.customer_id is None and poison.folded_at is not None


def test_later_batches_of_the_team_fold_after_a_poison_event(engine: Engine) -> None:
    team_id = new_team(engine)
    store(engine, team_id, [poisoned("poison", 1, "ann", name=HUGE)])
    store(engine, team_id, [event("identify", f"m{n}", 2 + n, userId=f"u{n}") for n in range(7)])

    taken = [fold_pending(engine, team_id, batch_size=3) for _ in range(3)]

    assert taken == [3, 3, 2]
    assert backlog(engine, team_id) == 0
    assert [m for m, _, _ in failures(engine, team_id)] == ["poison"]
    assert all(customer_of(engine, team_id, "user", f"u{n}") for n in range(7))


def test_first_and_last_names_too_long_together_set_aside_the_second(engine: Engine) -> None:
    """Each alone fits the index; the name they make does not. The one folded second goes."""
    team_id = new_team(engine)
    store(
        engine,
        team_id,
        [
            poisoned("first", 1, "ann", firstName=incompressible(1_500, 1)),
            poisoned("last", 2, "ann", lastName=incompressible(1_500, 2)),
            event("track", "t", 3, userId="ann"),
        ],
    )

    fold_until_empty(engine, team_id)

    assert [m for m, _, _ in failures(engine, team_id)] == ["last"]
    assert profile(engine, team_id, "ann")[1] == 2


def test_a_lost_connection_propagates_and_sets_nothing_aside(engine: Engine) -> None:
    """Not the data's fault: the batch rolls back and is taken again, nothing is set aside."""
    team_id = new_team(engine)
    store(engine, team_id, [event("identify", "m", 1, userId="ann"), poisoned("p", 2, "ann", email=HUGE)])
    raised: list[BaseException] = []

    def fold() -> None:
        try:
            fold_pending(engine, team_id)
        except BaseException as error:
            raised.append(error)

    with engine.connect() as holder:
        # Hold the team's fold lock, so the fold waits on it; then its backend is terminated
        # (looked for in this session's database only: another test session on the same
        # server may have a fold waiting on a lock of its own).
        holder.execute(text("SELECT pg_advisory_lock(:ns, :t)"), {"ns": FOLD_LOCK_NAMESPACE, "t": team_id})
        holder.commit()
        folding = threading.Thread(target=fold)
        folding.start()
        waiting = None
        for _ in range(500):
            waiting = holder.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory'"
                    " AND datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE '%pg_advisory_xact_lock%'"
                )
            ).scalar()
            holder.commit()
            if waiting:
                break
            time.sleep(0.01)
        assert waiting, "the fold never waited on the team's lock"
        holder.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})
        holder.execute(text("SELECT pg_advisory_unlock(:ns, :t)"), {"ns": FOLD_LOCK_NAMESPACE, "t": team_id})
        holder.commit()
        folding.join(10)

    assert len(raised) == 1 and isinstance(raised[0], DBAPIError), raised
    assert backlog(engine, team_id) == 2
    assert failures(engine, team_id) == []
    fold_until_empty(engine, team_id)
    assert backlog(engine, team_id) == 0
    assert [m for m, _, _ in failures(engine, team_id)] == ["p"]


def test_email_at_the_bound_in_four_byte_characters_folds(engine: Engine) -> None:
    team_id = new_team(engine)
    email = "\U0001d4b6" * MAX_PROFILE_TRAIT
    store(engine, team_id, [event("identify", "m", 1, userId="ann", traits={"email": email})])
    fold_until_empty(engine, team_id)
    assert failures(engine, team_id) == []
    assert profile(engine, team_id, "ann") == (email, 1)


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("traits", "email"),
        ("traits", "First Name"),
        ("context.traits", "name"),
        ("context.traits", "last_name"),
    ],
)
def test_ingest_refuses_a_profile_trait_over_the_bound(
    client: FlaskClient, team: TeamKeys, where: str, key: str
) -> None:
    too_long = "y" * (MAX_PROFILE_TRAIT + 1)
    body: dict[str, Any] = {"type": "identify", "userId": "ann", "messageId": "long"}
    if where == "traits":
        body["traits"] = {key: too_long}
    else:
        body["context"] = {"traits": {key: too_long}}
    response = client.post("/v1/segment", data=json.dumps(body), headers=team.basic(team.ingest))
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["code"] == "invalid_event"
    assert list(answer["errors"]) == [where]
    assert f"{key!r} trait may be at most {MAX_PROFILE_TRAIT} characters" in answer["message"]


def test_ingest_keeps_long_values_of_other_traits_and_non_strings(
    client: FlaskClient, team: TeamKeys
) -> None:
    body = {
        "type": "identify",
        "userId": "ann",
        "traits": {"bio": "z" * 5_000, "email": {"work": "w" * 300}, "name": 10**30},
    }
    response = client.post("/v1/segment", data=json.dumps(body), headers=team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()


def test_a_delete_erases_the_persons_set_aside_events(engine: Engine) -> None:
    team_id = new_team(engine)
    store(
        engine,
        team_id,
        [poisoned("ann-poison", 1, "ann", email=HUGE), poisoned("bob-poison", 1, "bob", email=HUGE)],
    )
    fold_until_empty(engine, team_id)
    assert [m for m, _, _ in failures(engine, team_id)] == ["ann-poison", "bob-poison"]

    store(engine, team_id, [event("delete", "forget-ann", 5, userId="ann")])
    fold_until_empty(engine, team_id)

    assert [m for m, _, _ in failures(engine, team_id)] == ["bob-poison"]
    with engine.connect() as connection:
        kept = (
            connection.execute(
                text("SELECT message_id FROM events WHERE team_id = :t ORDER BY message_id"), {"t": team_id}
            )
            .scalars()
            .all()
        )
    assert kept == ["bob-poison"]


def _shared_device_with_a_poisoned_co_owner() -> tuple[list[Any], list[Any]]:
    """Issue 22's shape, with an email stored before the bound (`poisoned`): U2's huge
    email folded while a later, short email on their device won; erasing V (who used the
    device too) erases that short email, and deriving U2 again reaches the huge one."""
    u2 = poisoned("e2", 0, "U2", email=incompressible(3000, seed=22))
    u2.raw["anonymousId"] = "dev-A"
    u2 = replace(u2, anonymous_id="dev-A")
    rest = [
        u2,
        event("identify", "e1", 1, anonymousId="dev-A", traits={"email": "a@example.com"}),
        event("identify", "e3", 2, userId="V", anonymousId="dev-A", traits={"ssn": "078-05-1120"}),
        event("track", "e5", 3, userId="U2"),
    ]
    return rest, [event("delete", "e4", 5, userId="V")]


@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "delete-later"])
def test_a_delete_is_never_set_aside_when_re_deriving_someone_else_fails(
    engine: Engine, together: bool
) -> None:
    team = new_team(engine)
    rest, delete = _shared_device_with_a_poisoned_co_owner()
    if together:
        store(engine, team, rest + delete)
    else:
        store(engine, team, rest)
        fold_until_empty(engine, team)
        assert failures(engine, team) == []
        store(engine, team, delete)
    fold_until_empty(engine, team)
    # V is gone, whatever failed around it; the delete is not among the failures.
    assert customer_of(engine, team, "user", "V") is None
    with engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t AND (user_id = 'V' OR type = 'delete')"),
            {"t": team},
        ).scalar_one()
    assert left == 0
    assert [m for m, _, _ in failures(engine, team)] == ["e2"]  # U2's poison is set aside instead
    assert backlog(engine, team) == 0
    assert profile(engine, team, "U2") == (None, 1)  # U2 keeps what could be folded
