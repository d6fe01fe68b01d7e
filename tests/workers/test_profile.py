"""What the profile and the feed show: traits, groups, memberships, the timeline (SPEC §3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from tests.conftest import TeamKeys
from tests.workers.support import at, deliver, event, new_team

ANN = (("ann",), ())


@pytest.mark.parametrize("newest_first", [False, True])
def test_the_latest_trait_wins_whatever_the_arrival_order(engine: Engine, newest_first: bool) -> None:
    team = new_team(engine)
    old = [event("identify", "old", 1, userId="ann", traits={"plan": "free", "email": "ann@old.example"})]
    new = [event("identify", "new", 2, userId="ann", traits={"plan": "pro"})]
    s = deliver(engine, team, *([new, old] if newest_first else [old, new]))
    traits = s.customers[ANN].traits
    assert traits["plan"] == ("plan", "pro")  # a late, older identify does not overwrite it
    assert traits["email"] == ("email", "ann@old.example")  # merged per key
    assert s.customers[ANN].email == "ann@old.example"


def test_spellings_of_one_trait_are_one_trait(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("identify", "i1", 1, userId="ann", traits={"firstName": "Anne", "lastName": "Lee"}),
            event("identify", "i2", 2, userId="ann", traits={"first_name": "Ann"}),
        ],
    )
    traits = s.customers[ANN].traits
    assert traits["firstname"] == ("first_name", "Ann")
    assert "first_name" not in traits
    assert s.customers[ANN].name == "Ann Lee"


def test_context_traits_of_any_event_count_as_traits(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("identify", "i1", 1, userId="ann", traits={"email": "ann@old.example"}),
            event("track", "t2", 2, userId="ann", context={"traits": {"email": "ann@new.example"}}),
        ],
    )
    assert s.customers[ANN].email == "ann@new.example"


def test_a_customer_belongs_to_several_groups_whose_latest_traits_win(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [event("group", "g1-new", 3, userId="ann", groupId="g1", traits={"name": "Initech", "plan": "gold"})],
        [
            event("group", "g1-old", 1, userId="bob", groupId="g1", traits={"name": "Initrode", "size": 5}),
            event("group", "g2", 2, userId="ann", groupId="g2", traits={"name": "Acme"}),
        ],
    )
    assert set(s.customers[ANN].memberships) == {"g1", "g2"}
    assert set(s.customers[(("bob",), ())].memberships) == {"g1"}
    g1 = s.groups["g1"]
    assert g1.name == "Initech"
    assert g1.traits == {"name": ("name", "Initech"), "plan": ("plan", "gold"), "size": ("size", 5)}


def test_the_feed_has_every_type_in_event_time_order(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("alias", "e6", 6, userId="ann", previousId="a1"),
            event("group", "e5", 5, userId="ann", groupId="g1"),
            event("screen", "e4", 4, userId="ann", name="Home"),
        ],
        [
            event("identify", "e3", 3, userId="ann", anonymousId="a1"),
            event("track", "e2", 2, anonymousId="a1"),
            event("page", "e1", 1, anonymousId="a1"),
        ],
    )
    assert s.customers[(("ann",), ("a1",))].feed == ["e1", "e2", "e3", "e4", "e5", "e6"]


def test_events_at_the_same_instant_have_one_order_whatever_the_arrival(engine: Engine) -> None:
    same = [event("track", f"m{n}", 1, userId="ann") for n in range(6)]
    feeds = []
    for order in (same, same[::-1], same[2:] + same[:2]):
        team = new_team(engine)
        feeds.append(deliver(engine, team, *([e] for e in order)).customers[ANN].feed)
    assert feeds[0] == feeds[1] == feeds[2]
    assert sorted(feeds[0]) == [f"m{n}" for n in range(6)]


def test_the_profile_and_feed_through_the_api(client: FlaskClient, team: TeamKeys, fold: Any) -> None:
    """Ingest over HTTP, fold through RQ, read as an agent does."""
    batch = [
        {"type": "page", "anonymousId": "a1", "messageId": "p1", "timestamp": at(0), "name": "Home"},
        {"type": "identify", "userId": "ann", "anonymousId": "a1", "messageId": "i1", "timestamp": at(1),
         "traits": {"first_name": "Ann", "lastName": "Lee", "email": "ann@example.com"}},
        {"type": "group", "userId": "ann", "groupId": "g1", "messageId": "g1", "timestamp": at(2),
         "traits": {"name": "Initech"}},
        {"type": "track", "userId": "ann", "event": "Paid", "messageId": "t1", "timestamp": at(3)},
    ]  # fmt: skip
    response = client.post("/v1/batch", data=json.dumps({"batch": batch}), headers=team.basic(team.ingest))
    assert response.status_code == 200, response.get_json()
    fold()
    read = team.bearer(team.read)
    profile = client.get("/api/v1/customers/lookup?anonymous_id=a1", headers=read).get_json()
    assert (profile["user_ids"], profile["anonymous_ids"]) == (["ann"], ["a1"])
    assert (profile["name"], profile["email"]) == ("Ann Lee", "ann@example.com")
    assert [g["name"] for g in profile["groups"]] == ["Initech"]
    assert profile["event_count"] == 4
    feed = client.get(f"/api/v1/customers/{profile['id']}/feed?order=asc", headers=read).get_json()
    assert [item["message_id"] for item in feed["data"]] == ["p1", "i1", "g1", "t1"]
