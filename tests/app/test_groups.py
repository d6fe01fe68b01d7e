"""`GET /api/v1/groups/{group_id}`: a group's traits and its members (SPEC §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from schemas.cursors import InstantPosition, encode_cursor
from schemas.segment import prepare_event
from store.answers.group import GROUP, GroupSchema
from store.events import store_events
from tests.conftest import TeamKeys
from tests.store.reference import load_group
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, *events: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def joins(user: str, group: str, minute: float, **traits: Any) -> dict[str, Any]:
    return {
        "type": "group",
        "userId": user,
        "groupId": group,
        "timestamp": at(minute),
        "messageId": f"{user}-{group}-{minute}",
        "traits": traits,
    }


def get(client: FlaskClient, team: TeamKeys, url: str, status: int = 200) -> Any:
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_group_shows_its_traits_and_members(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(
        engine,
        team,
        {"type": "identify", "userId": "u-bo", "timestamp": at(0), "messageId": "i1",
         "traits": {"email": "bo@acme.test", "name": "Bo"}},
        joins("u-bo", "acme", 1, name="Acme", plan="free"),
        joins("u-cy", "acme", 2, plan="enterprise"),  # a later call: its plan wins
        joins("u-cy", "other", 3, name="Other"),
    )  # fmt: skip
    group = get(client, team, "/api/v1/groups/acme")
    assert {
        key: group[key] for key in ("id", "name", "traits", "first_seen", "last_seen", "member_count")
    } == {
        "id": "acme",
        "name": "Acme",
        "traits": {"name": "Acme", "plan": "enterprise"},
        "first_seen": at(1),
        "last_seen": at(2),
        "member_count": 2,
    }
    bo, cy = group["members"]
    assert (bo["user_ids"], bo["email"], bo["name"], bo["joined_at"]) == (
        ["u-bo"],
        "bo@acme.test",
        "Bo",
        at(1),
    )
    assert (cy["user_ids"], cy["joined_at"], cy["event_count"]) == (["u-cy"], at(2), 2)
    assert group["next_cursor"] is None
    profile = get(client, team, f"/api/v1/customers/{cy['id']}")
    assert [g["id"] for g in profile["groups"]] == ["acme", "other"]


def test_members_page_in_the_order_they_joined(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(engine, team, *(joins(f"u{n}", "big", 10 - n) for n in range(5)))
    joined: list[list[str]] = []
    url = "/api/v1/groups/big?limit=2"
    while url:
        page = get(client, team, url)
        assert page["member_count"] == 5
        joined.append([member["user_ids"][0] for member in page["members"]])
        url = f"/api/v1/groups/big?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert joined == [["u4", "u3"], ["u2", "u1"], ["u0"]]


@pytest.mark.parametrize("limit", [1, 2, 50])
def test_every_group_page_postgres_builds_equals_the_reference(
    client: FlaskClient, team: TeamKeys, engine: Engine, limit: int
) -> None:
    send(
        engine,
        team,
        joins("u1", "acme", 1, name="Acme", plan={"tier": 2, "seats": [1, None]}, **{"ü": "ß", "B": 1.5}),
        joins("u2", "acme", 1),  # joined at the same time as u1: the customer id orders them
        joins("u3", "acme", 2, employees=40),
        {"type": "identify", "userId": "u2", "anonymousId": "v2", "timestamp": at(3), "messageId": "i2",
         "traits": {"email": "two@acme.test", "name": "Two \u2028 \"quoted\""}},
        company("u4", 4, {"id": "acme", "remove": True}),  # never joined: a membership that is not active
        company("u5", 5, {"id": "initech"}),  # a company only named in traits.company
        {"type": "alias", "previousId": "u3", "userId": "u6", "timestamp": at(6), "messageId": "a1"},
    )  # fmt: skip
    for group_id in ("acme", "initech"):
        after: InstantPosition | None = None
        cursor = None
        while True:
            url = f"/api/v1/groups/{group_id}?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            response = client.get(url, headers=team.bearer(team.read))
            assert response.status_code == 200 and response.mimetype == "application/json"
            group = json.loads(response.get_data(as_text=True))
            with engine.connect() as connection:
                found = load_group(connection, team.id, group_id, limit=limit, after=after)
            assert found is not None
            reference, following = found
            next_cursor = encode_cursor("members", following, "asc") if following else None
            assert group == GroupSchema().dump({**reference, "next_cursor": next_cursor}), (group_id, after)
            assert list(group) == [field.name for field in GROUP.fields]
            cursor, after = group["next_cursor"], following
            if cursor is None:
                break


def test_a_group_id_may_hold_any_characters(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    odd = "org/42 ü?#%"
    send(engine, team, joins("u1", odd, 0, name="Odd"))
    group = get(client, team, "/api/v1/groups/" + quote(odd, safe=""))
    assert (group["id"], group["name"]) == (odd, "Odd")


def test_an_unknown_group_is_404(client: FlaskClient, team: TeamKeys) -> None:
    assert get(client, team, "/api/v1/groups/nope", status=404)["code"] == "not_found"
    assert get(client, team, "/api/v1/groups/a%00b", status=404)["code"] == "not_found"


def test_bad_member_paging_is_a_400(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(engine, team, joins("u1", "g", 0))
    assert get(client, team, "/api/v1/groups/g?limit=0", status=400)["code"] == "invalid_query"
    assert get(client, team, "/api/v1/groups/g?cursor=xyz", status=400)["code"] == "invalid_cursor"


# -- companies from identify's traits.company (Intercom's and Zendesk's convention) ----


def company(user: str, minute: float, value: Any, message_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "timestamp": at(minute),
        "messageId": message_id or f"{user}-company-{minute}",
        "traits": {"company": value},
    }


def profile_groups(client: FlaskClient, team: TeamKeys, user: str) -> list[str]:
    return [g["id"] for g in get(client, team, f"/api/v1/customers/user_id:{user}")["groups"]]


def test_an_identify_company_makes_a_membership(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(
        engine,
        team,
        company("u-bo", 1, {"id": "c-9", "name": "Initech", "plan": "gold"}),
        company("u-cy", 2, "Globex"),  # a name alone is the company's id
        company("u-di", 3, {"id": 42}),
        company("u-ed", 4, {"name": "no id"}),  # not a company we can name
    )
    assert profile_groups(client, team, "u-bo") == ["c-9"]
    assert profile_groups(client, team, "u-cy") == ["Globex"]
    assert profile_groups(client, team, "u-di") == ["42"]
    assert profile_groups(client, team, "u-ed") == []
    group = get(client, team, "/api/v1/groups/c-9")
    assert (group["member_count"], [m["user_ids"] for m in group["members"]]) == (1, [["u-bo"]])
    assert (group["first_seen"], group["last_seen"]) == (at(1), at(1))


@pytest.mark.parametrize("order", ["leave last", "leave first"])
def test_company_remove_ends_a_membership_and_an_older_call_never_undoes_it(
    client: FlaskClient, team: TeamKeys, engine: Engine, order: str
) -> None:
    join_call = joins("u-bo", "acme", 1, name="Acme")
    join_identify = company("u-bo", 2, {"id": "acme"})
    leave = company("u-bo", 3, {"id": "acme", "name": "Acme Inc", "remove": True})
    arrivals = (
        [join_call, join_identify, leave] if order == "leave last" else [leave, join_identify, join_call]
    )
    for event in arrivals:
        send(engine, team, event)
    assert profile_groups(client, team, "u-bo") == []
    group = get(client, team, "/api/v1/groups/acme")
    assert (group["member_count"], group["members"]) == (0, [])
    feed = get(client, team, "/api/v1/customers/user_id:u-bo/feed?order=asc")["data"]
    assert [item["summary"] for item in feed] == [
        "Joined group Acme",
        "Traits updated",
        "Left group Acme Inc",
    ]
    assert [item["type"] for item in feed] == ["group", "identify", "identify"]
    # A newer join brings the customer back, whenever it arrives.
    send(engine, team, joins("u-bo", "acme", 4))
    assert profile_groups(client, team, "u-bo") == ["acme"]
    send(engine, team, company("u-bo", 0, {"id": "acme", "remove": True}, "older-leave"))
    assert profile_groups(client, team, "u-bo") == ["acme"]


def test_a_membership_follows_a_merge_by_its_latest_call(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(
        engine,
        team,
        company("old-id", 1, {"id": "acme"}),
        company("new-id", 2, {"id": "acme", "remove": True}),
        company("old-id", 3, {"id": "globex"}),
    )
    send(engine, team, {"type": "alias", "previousId": "old-id", "userId": "new-id", "timestamp": at(4),
                        "messageId": "a1"})  # fmt: skip
    assert profile_groups(client, team, "new-id") == ["globex"]
    assert get(client, team, "/api/v1/groups/acme")["member_count"] == 0
