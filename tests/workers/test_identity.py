"""Who is who: anonymous visitors, known customers, aliases and junk ids (SPEC §3).

Each rule is checked in both arrival orders where order could matter, since Segment
delivers late and out of order.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.conftest import TeamKeys
from tests.workers.support import at, customer_of, deliver, event, new_team, store


def test_an_anonymous_visitor_is_a_customer(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine, team, [event("page", "p1", 0, anonymousId="a1"), event("page", "p2", 1, anonymousId="a1")]
    )
    assert list(s.customers) == [((), ("a1",))]
    assert s.customers[((), ("a1",))].feed == ["p1", "p2"]


@pytest.mark.parametrize("identify_first", [False, True])
def test_identify_joins_the_anonymous_history_to_the_known_customer(
    engine: Engine, identify_first: bool
) -> None:
    team = new_team(engine)
    pages = [event("page", "p1", 0, anonymousId="a1"), event("track", "t1", 1, anonymousId="a1")]
    identify = [
        event("identify", "i1", 2, userId="u1", anonymousId="a1", traits={"email": "ann@example.com"})
    ]
    s = deliver(engine, team, *([identify, pages] if identify_first else [pages, identify]))
    assert list(s.customers) == [(("u1",), ("a1",))]
    ann = s.customers[(("u1",), ("a1",))]
    assert ann.feed == ["p1", "t1", "i1"]  # the whole journey, from the first anonymous page
    assert ann.email == "ann@example.com"


def test_the_visitors_customer_id_keeps_working_after_identify(engine: Engine) -> None:
    team = new_team(engine)
    deliver(engine, team, [event("page", "p1", 0, anonymousId="a1")])
    visitor = customer_of(engine, team, "anonymous", "a1")
    deliver(engine, team, [event("identify", "i1", 1, userId="u1", anonymousId="a1")])
    assert customer_of(engine, team, "user", "u1") == visitor


def test_known_customers_sharing_an_anonymous_id_are_not_merged(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("page", "p0", 0, anonymousId="shared"),
            event("identify", "i1", 1, userId="ann", anonymousId="shared"),
            event("identify", "i2", 2, userId="bob", anonymousId="shared"),
            event("track", "t3", 3, userId="bob"),
        ],
    )
    # The earliest claim owns the anonymous-only history; Bob keeps his own events.
    assert set(s.customers) == {(("ann",), ("shared",)), (("bob",), ())}
    assert s.customers[(("ann",), ("shared",))].feed == ["p0", "i1"]
    assert s.customers[(("bob",), ())].feed == ["i2", "t3"]


def test_an_earlier_claim_arriving_late_moves_the_anonymous_history(engine: Engine) -> None:
    team = new_team(engine)
    deliver(
        engine,
        team,
        [
            event("page", "p0", 0, anonymousId="shared"),
            event("identify", "i2", 2, userId="bob", anonymousId="shared"),
        ],
    )
    s = deliver(engine, team, [event("identify", "i1", 1, userId="ann", anonymousId="shared")])
    assert set(s.customers) == {(("ann",), ("shared",)), (("bob",), ())}
    assert s.customers[(("ann",), ("shared",))].feed == ["p0", "i1"]
    assert s.customers[(("bob",), ())].feed == ["i2"]
    assert s.customers[(("bob",), ())].event_count == 1


@pytest.mark.parametrize("alias_first", [False, True])
def test_alias_merges_two_known_customers(engine: Engine, alias_first: bool) -> None:
    team = new_team(engine)
    ids = [
        event("identify", "i1", 0, userId="old-id", traits={"plan": "free"}),
        event("identify", "i2", 2, userId="new-id", traits={"plan": "pro"}),
    ]
    alias = [event("alias", "al", 1, userId="new-id", previousId="old-id")]
    s = deliver(engine, team, *([alias, ids] if alias_first else [ids, alias]))
    assert list(s.customers) == [(("new-id", "old-id"), ())]
    merged = s.customers[(("new-id", "old-id"), ())]
    assert merged.feed == ["i1", "al", "i2"]
    assert merged.traits["plan"] == ("plan", "pro")


def test_an_alias_from_an_anonymous_id_joins_its_history(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [event("page", "p0", 0, anonymousId="a1")],
        [event("alias", "al", 1, userId="u1", previousId="a1")],
    )
    assert list(s.customers) == [(("u1",), ("a1",))]
    assert s.customers[(("u1",), ("a1",))].feed == ["p0", "al"]


def test_an_alias_chain_makes_one_customer_and_old_ids_resolve_to_it(engine: Engine) -> None:
    team = new_team(engine)
    deliver(engine, team, *([event("track", f"t{n}", n, userId=f"u{n}")] for n in (1, 2, 3)))
    old = {u: customer_of(engine, team, "user", u) for u in ("u1", "u2", "u3")}
    s = deliver(
        engine,
        team,
        [event("alias", "a12", 4, userId="u2", previousId="u1")],
        [event("alias", "a23", 5, userId="u3", previousId="u2")],
    )
    assert list(s.customers) == [(("u1", "u2", "u3"), ())]
    survivor = customer_of(engine, team, "user", "u1")
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, merged_into FROM customers WHERE team_id = :t AND id = ANY(:ids)"),
            {"t": team, "ids": list(old.values())},
        ).all()
    # Every customer id ever handed out resolves, in one step, to the live survivor.
    assert {r.id: r.merged_into or r.id for r in rows} == {c: survivor for c in old.values()}


@pytest.mark.parametrize("junk", ["null", "undefined", "0", "anonymous", "", "NULL", " null\t"])
def test_junk_ids_are_not_identities(engine: Engine, junk: str) -> None:
    team = new_team(engine)
    s = deliver(
        engine,
        team,
        [
            event("identify", "i1", 0, userId="ann", anonymousId=junk, traits={"name": "Ann"}),
            event("identify", "i2", 1, userId="bob", anonymousId=junk, traits={"name": "Bob"}),
            event("page", "p3", 2, userId=junk, anonymousId="visitor"),
        ],
    )
    # Two people whose SDK sent the same junk anonymousId stay two people.
    assert set(s.customers) == {(("ann",), ()), (("bob",), ()), ((), ("visitor",))}
    assert s.customers[((), ("visitor",))].feed == ["p3"]


def test_an_event_with_only_junk_ids_is_kept_but_on_no_timeline(engine: Engine) -> None:
    team = new_team(engine)
    s = deliver(engine, team, [event("track", "t1", 0, userId="undefined", anonymousId="null")])
    assert s.customers == {}
    assert s.orphans == {"t1"}


def test_one_user_id_is_one_customer_however_it_arrives(engine: Engine) -> None:
    team = new_team(engine)
    store(
        engine, team, [event("track", f"t{n}", n, userId="ann", anonymousId=f"device-{n}") for n in range(5)]
    )
    s = deliver(engine, team, [event("identify", "i", 9, userId="ann")])
    assert list(s.customers) == [(("ann",), tuple(f"device-{n}" for n in range(5)))]


def test_a_merged_away_customer_id_redirects_to_the_survivor(
    client: FlaskClient, team: TeamKeys, fold: Any
) -> None:
    ingest, read = team.basic(team.ingest), team.bearer(team.read)

    def send(*events: dict[str, Any]) -> None:
        response = client.post("/v1/batch", data=json.dumps({"batch": list(events)}), headers=ingest)
        assert response.status_code == 200, response.get_json()
        fold()

    def customer(user_id: str) -> str:
        return str(client.get(f"/api/v1/customers/lookup?user_id={user_id}", headers=read).get_json()["id"])

    send(*({"type": "track", "event": "Clicked", "userId": u, "messageId": u, "timestamp": at(n)}
           for n, u in enumerate(("u1", "u2", "u3"))))  # fmt: skip
    before = [customer(u) for u in ("u1", "u2", "u3")]
    send({"type": "alias", "userId": "u2", "previousId": "u1", "messageId": "a12", "timestamp": at(5)})
    send({"type": "alias", "userId": "u3", "previousId": "u2", "messageId": "a23", "timestamp": at(6)})
    survivor = customer("u3")
    assert customer("u1") == customer("u2") == survivor
    for old in before:
        response = client.get(f"/api/v1/customers/{old}", headers=read)
        if old == survivor:
            assert response.status_code == 200
        else:
            assert response.status_code == 308
            assert response.headers["Location"].endswith(f"/api/v1/customers/{survivor}")
