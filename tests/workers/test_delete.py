"""Segment `delete`: the person is erased, and stays erased when Segment re-sends (SPEC §3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys, load_fixture
from tests.workers.hostile import incompressible
from tests.workers.support import customer_of, deliver, event, new_team

TABLES_WITH_IDS = {
    "events": "user_id = ANY(:ids) OR anonymous_id = ANY(:ids) OR previous_id = ANY(:ids)",
    "identities": "value = ANY(:ids)",
    "anonymous_claims": "user_id = ANY(:ids) OR anonymous_id = ANY(:ids)",
    "aliases": "user_id = ANY(:ids) OR previous_id = ANY(:ids)",
}


def stored_mentions(engine: Engine, team_id: int, ids: list[str]) -> dict[str, int]:
    """Rows that still name any of the ids, per table (tombstones aside)."""
    with engine.connect() as connection:
        return {
            table: connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE team_id = :t AND ({where})"),
                {"t": team_id, "ids": ids},
            ).scalar_one()
            for table, where in TABLES_WITH_IDS.items()
        }


def anns_life(minute: float = 0) -> list[Any]:
    """Ann's journey: anonymous browsing, identify, a company, an old id aliased."""
    return [
        event("page", "p1", minute, anonymousId="ann-phone"),
        event(
            "identify", "i1", minute + 1, userId="ann", anonymousId="ann-phone", traits={"email": "ann@x.io"}
        ),
        event("group", "g1", minute + 2, userId="ann", groupId="initech", traits={"name": "Initech"}),
        event("track", "t1", minute + 3, userId="ann-old"),
        event("alias", "al", minute + 4, userId="ann", previousId="ann-old"),
    ]


@pytest.mark.parametrize("delete_first", [False, True], ids=["delete-last", "delete-first"])
def test_delete_erases_everything_of_the_person(engine: Engine, delete_first: bool) -> None:
    team = new_team(engine)
    delete = [event("delete", "del", 10, userId="ann")]
    s = deliver(engine, team, *([delete, anns_life()] if delete_first else [anns_life(), delete]))
    assert s.customers == {}
    assert s.groups == {}  # the company existed only through Ann's group call
    assert stored_mentions(engine, team, ["ann", "ann-old", "ann-phone"]) == dict.fromkeys(TABLES_WITH_IDS, 0)
    assert set(s.tombstones) == {
        ("user", "ann"),
        ("user", "ann-old"),
        ("anonymous", "ann-old"),
        ("anonymous", "ann-phone"),
    }


def test_resent_events_dated_before_the_delete_stay_erased(engine: Engine) -> None:
    team = new_team(engine)
    deliver(engine, team, anns_life(), [event("delete", "del", 10, userId="ann")])
    s = deliver(engine, team, anns_life(), [event("page", "p-again", 5, anonymousId="ann-phone")])
    assert s.customers == {}
    assert stored_mentions(engine, team, ["ann", "ann-old", "ann-phone"])["events"] == 0


def test_events_after_the_delete_start_a_new_customer(engine: Engine) -> None:
    team = new_team(engine)
    deliver(engine, team, anns_life())
    before = customer_of(engine, team, "user", "ann")
    s = deliver(
        engine,
        team,
        [event("delete", "del", 10, userId="ann")],
        [event("identify", "back", 20, userId="ann", traits={"plan": "pro"})],
    )
    assert list(s.customers) == [(("ann",), ())]
    assert s.customers[(("ann",), ())].feed == ["back"]
    assert s.customers[(("ann",), ())].traits == {"plan": ("plan", "pro")}
    assert customer_of(engine, team, "user", "ann") != before


def test_a_delete_between_events_keeps_the_later_ones(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [event("track", "t1", 1, userId="ann"), event("track", "t3", 3, userId="ann")],
        [event("delete", "del", 2, userId="ann")],
    )
    assert list(s.customers) == [(("ann",), ())]
    assert s.customers[(("ann",), ())].feed == ["t3"]
    assert s.customers[(("ann",), ())].event_count == 1


def test_a_later_delete_erases_what_came_after_the_first(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [event("identify", "i1", 1, userId="ann", anonymousId="phone")],
        [event("delete", "del1", 2, userId="ann")],
        [event("page", "p3", 3, anonymousId="phone"), event("track", "t3", 3, userId="ann")],
        [event("delete", "del2", 4, userId="ann")],
    )
    assert s.customers == {}


def test_a_delete_leaves_another_person_on_a_shared_device_alone(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("identify", "i-ann", 1, userId="ann", anonymousId="family-pc"),
            event("identify", "i-bob", 2, userId="bob", anonymousId="family-pc", traits={"name": "Bob"}),
            event("track", "t-bob", 3, userId="bob"),
        ],
        [event("delete", "del", 5, userId="ann")],
    )
    # Bob's own events stay; the shared device is now his.
    assert list(s.customers) == [(("bob",), ("family-pc",))]
    assert s.customers[(("bob",), ("family-pc",))].feed == ["i-bob", "t-bob"]
    assert s.customers[(("bob",), ("family-pc",))].name == "Bob"


def test_delete_through_the_api_answers_200_and_the_person_is_gone(
    client: FlaskClient, team: TeamKeys, fold: Any
) -> None:
    ingest = team.basic(team.ingest)
    for name in ("identify-partner-doc.json", "alias-partner-doc.json", "track-spec-doc.json"):
        assert (
            client.post("/v1/segment", data=json.dumps(load_fixture(name)), headers=ingest).status_code == 200
        )
    fold()
    read = team.bearer(team.read)
    assert client.get("/api/v1/customers/lookup?user_id=507f191e81", headers=read).status_code == 200
    delete = load_fixture("delete-partner-doc.json")  # 2020: after the fixtures' 2015-2019 events
    response = client.post("/v1/segment", data=json.dumps(delete), headers=ingest)
    assert response.status_code == 200
    fold()
    for user_id in ("507f191e81", "97980cfea0067"):  # the alias made them one person
        found = client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=read)
        assert found.status_code == 404, found.get_json()
    # Segment re-sends the old alias: it does not bring the person back.
    client.post("/v1/segment", data=json.dumps(load_fixture("alias-partner-doc.json")), headers=ingest)
    fold()
    assert client.get("/api/v1/customers/lookup?user_id=507f191e81", headers=read).status_code == 404


# -- issue 22: a delete erases what we hold, and is never set aside ------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _post(client: FlaskClient, team: TeamKeys, body: Any) -> None:
    response = client.post("/v1/segment", data=json.dumps(body), headers=team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()


def _readable(client: FlaskClient, team: TeamKeys, user_id: str) -> int:
    return int(
        client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=team.bearer(team.read)).status_code
    )


def test_a_delete_without_time_erases_every_event_received_before_it_whatever_its_date(
    client: FlaskClient, team: TeamKeys, engine: Engine, fold: Any
) -> None:
    now = datetime.now(UTC)
    _post(
        client,
        team,
        {"type": "identify", "userId": "D2", "messageId": "d2-1", "timestamp": _iso(now - timedelta(days=1))},
    )
    _post(
        client,
        team,
        {
            "type": "track",
            "userId": "D2",
            "event": "Bought medicine",
            "messageId": "d2-2",
            "timestamp": _iso(now + timedelta(hours=6)),
        },
    )
    _post(
        client,
        team,
        {
            "type": "identify",
            "userId": "D2",
            "messageId": "d2-3",
            "timestamp": _iso(now + timedelta(days=365)),
            "traits": {"email": "d2@example.com", "phone": "+1 555 0100"},
        },
    )
    fold()
    assert _readable(client, team, "D2") == 200
    _post(client, team, {"type": "delete", "userId": "D2", "messageId": "d2-del"})
    fold()
    assert _readable(client, team, "D2") == 404
    assert stored_mentions(engine, team.id, ["D2"]) == dict.fromkeys(TABLES_WITH_IDS, 0)
    with engine.connect() as connection:
        leftovers = connection.execute(
            text("SELECT count(*) FROM customers WHERE team_id = :t AND email = 'd2@example.com'"),
            {"t": team.id},
        ).scalar_one()
    assert leftovers == 0


def test_a_delete_dated_year_0001_erases_what_was_stored(
    client: FlaskClient, team: TeamKeys, engine: Engine, fold: Any
) -> None:
    _post(
        client,
        team,
        {"type": "identify", "userId": "Y1", "messageId": "y1-1", "traits": {"ssn": "078-05-1120"}},
    )
    _post(client, team, {"type": "track", "userId": "Y1", "event": "Logged In", "messageId": "y1-2"})
    fold()
    assert _readable(client, team, "Y1") == 200
    _post(
        client,
        team,
        {"type": "delete", "userId": "Y1", "messageId": "y1-del", "timestamp": "0001-01-01T00:00:00Z"},
    )
    fold()
    assert _readable(client, team, "Y1") == 404
    assert stored_mentions(engine, team.id, ["Y1"]) == dict.fromkeys(TABLES_WITH_IDS, 0)


def test_a_delete_is_applied_when_re_deriving_a_co_owner_reaches_a_trait_key_only_one_side_folded(
    client: FlaskClient, team: TeamKeys, engine: Engine, fold: Any
) -> None:
    # Issue 22's recipe, in one batch: `EMAİL` (U+0130) was not `email` to ingest's bound
    # (Python) but was to the fold (Postgres's lower()), and erasing V re-derived U2, who
    # shares dev-A, reaching the 3,000-character value: the delete itself was set aside.
    start = datetime.now(UTC) - timedelta(minutes=10)
    batch = [
        {
            "type": "identify",
            "anonymousId": "dev-A",
            "messageId": "e1",
            "timestamp": _iso(start + timedelta(minutes=1)),  # after U2's: the short email wins
            "traits": {"email": "a@example.com"},
        },
        {
            "type": "identify",
            "userId": "U2",
            "anonymousId": "dev-A",
            "messageId": "e2",
            "timestamp": _iso(start),
            "traits": {"EMA\u0130L": incompressible(3000, seed=22)},
        },
        {
            "type": "identify",
            "userId": "V",
            "anonymousId": "dev-A",
            "messageId": "e3",
            "timestamp": _iso(start + timedelta(minutes=2)),
            "traits": {"ssn": "078-05-1120"},
        },
        {"type": "delete", "userId": "V", "messageId": "e4"},
    ]
    _post(client, team, {"batch": batch})
    fold()
    assert _readable(client, team, "V") == 404
    with engine.connect() as connection:
        ssn = connection.execute(
            text("SELECT count(*) FROM events WHERE team_id = :t AND raw::text LIKE '%078-05-1120%'"),
            {"t": team.id},
        ).scalar_one()
    assert ssn == 0
    failures = client.get("/api/v1/fold/failures", headers=team.bearer(team.admin)).get_json()["data"]
    assert [f for f in failures if f["type"] == "delete"] == []
