"""Segment `delete`: the person is erased, and stays erased when Segment re-sends (SPEC §3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys, load_fixture
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
