"""Reads that cost what the page shows, and the ingest bound that keeps an event's fold
bounded (issue 20).

A tenant chooses how wide its events and customers are. These build the wide customers
the issue measured (smaller, the same shape) and check, on what the user would see and
on what Postgres did (the transaction's own table statistics, never wall-clock), that
each answer is bounded by its caps and says what it left out, with a way to the rest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, text

from schemas.api import PROFILE_GROUPS, PROFILE_IDS, PROFILE_TRAITS, SHOWN_KEYS, SHOWN_VALUE
from schemas.segment import prepare_event
from schemas.trait_keys import MAX_TRAIT_KEYS
from store.customers import read_external_ids
from store.events import store_events
from store.feed import read_feed_page
from tests.conftest import TeamKeys
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
WIDE_EVENTS = 12


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, *events: dict[str, Any]) -> None:
    """Store events as ingest would, then fold them."""
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def get(client: FlaskClient, team: TeamKeys, url: str, status: int = 200) -> tuple[Any, int]:
    """The answer's JSON and its size in bytes."""
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    return response.get_json(), len(response.get_data())


def every_page(client: FlaskClient, team: TeamKeys, url: str, key: str = "data") -> list[Any]:
    found: list[Any] = []
    cursor = None
    separator = "&" if "?" in url else "?"
    while True:
        page, _ = get(client, team, url + (f"{separator}cursor={cursor}" if cursor else ""))
        found += page[key] if isinstance(page[key], list) else list(page[key].items())
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def table_reads(connection: Connection, table: str) -> dict[str, int]:
    """What this transaction has read of `table` so far (pg_stat_xact_user_tables)."""
    row = connection.execute(
        text(
            "SELECT seq_scan, COALESCE(idx_scan, 0) AS idx_scan, COALESCE(idx_tup_fetch, 0) AS idx_tup_fetch "
            "FROM pg_stat_xact_user_tables WHERE relname = :table"
        ),
        {"table": table},
    ).one()
    return dict(row._mapping)


@pytest.fixture
def wide(engine: Engine, team: TeamKeys) -> str:
    """A customer whose identifies each set MAX_TRAIT_KEYS traits (the ingest bound), every
    value new, so each identify changes every trait; one value is long. Its id."""
    send(
        engine,
        team,
        *(
            {
                "type": "identify",
                "userId": "wide",
                "timestamp": at(n),
                "messageId": f"wide-{n}",
                "traits": {f"trait_{k:04}": f"v{n}-{k}" for k in range(MAX_TRAIT_KEYS - 1)}
                | {"bio": "x" * (SHOWN_VALUE + 500)},
            }
            for n in range(WIDE_EVENTS)
        ),
    )
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT customer_id FROM identities WHERE team_id = :t AND value = 'wide'"), {"t": team.id}
        ).scalar_one()
    return str(found)


# -- the feed ------------------------------------------------------------------------


def test_a_wide_customers_feed_page_is_bounded_in_size_and_says_what_it_cut(
    client: FlaskClient, team: TeamKeys, wide: str
) -> None:
    page, size = get(client, team, f"/api/v1/customers/{wide}/feed?limit=50")
    assert len(page["data"]) == WIDE_EVENTS
    # Whole, each item carried 1,000 traits and 1,000 changes (~70 KB an item, ~850 KB here).
    assert size < 150_000, size
    for item in page["data"]:
        assert len(item["traits"]) == SHOWN_KEYS
        assert len(item["changes"]) <= SHOWN_KEYS
        assert item["truncated"] == ["traits", "changes"]
        assert all(len(json.dumps(value)) <= SHOWN_VALUE + 2 for value in item["traits"].values())
    assert page["data"][-1]["changes"][0] == {"trait": "bio", "from": None, "to": "x" * SHOWN_VALUE}


def test_a_cut_item_is_answered_whole_by_its_id(
    client: FlaskClient, team: TeamKeys, engine: Engine, wide: str
) -> None:
    page, _ = get(client, team, f"/api/v1/customers/{wide}/feed?limit=1")
    newest = page["data"][0]
    whole, _ = get(client, team, f"/api/v1/customers/{wide}/feed/{newest['id']}")
    assert whole["truncated"] == []
    assert len(whole["traits"]) == MAX_TRAIT_KEYS
    assert whole["traits"]["bio"] == "x" * (SHOWN_VALUE + 500)
    assert len(whole["changes"]) == MAX_TRAIT_KEYS - 1  # every trait but the unchanged bio
    assert {key: whole[key] for key in ("id", "type", "message_id", "timestamp")} == {
        key: newest[key] for key in ("id", "type", "message_id", "timestamp")
    }
    assert get(client, team, f"/api/v1/customers/{wide}/feed/999999999", 404)[0]["code"] == "not_found"
    assert get(client, team, f"/api/v1/customers/{wide}/feed/x1", 404)[0]["code"] == "not_found"
    # Another customer's item is not this customer's.
    send(
        engine,
        team,
        {"type": "track", "userId": "other", "event": "E", "messageId": "o1", "timestamp": at(0)},
    )
    other, _ = get(client, team, "/api/v1/customers/user_id:other/feed")
    assert get(client, team, f"/api/v1/customers/{wide}/feed/{other['data'][0]['id']}", 404)[0]


def test_a_wide_feed_page_reads_a_bounded_number_of_trait_history_rows(
    engine: Engine, team: TeamKeys, wide: str
) -> None:
    # Each identify's changes examine its first SHOWN_KEYS traits, one probe each, and one
    # bounded read says whether it set more: not one probe per trait it set.
    with engine.connect() as connection:
        before = table_reads(connection, "trait_history")
        page = read_feed_page(connection, team.id, int(wide), limit=50)
        after = table_reads(connection, "trait_history")
    assert page is not None and len(json.loads(page.items_json)) == WIDE_EVENTS
    fetched = after["idx_tup_fetch"] - before["idx_tup_fetch"]
    assert fetched <= WIDE_EVENTS * 3 * (SHOWN_KEYS + 1), fetched  # whole: ~2 x 12,000


# -- the profile, traits and groups --------------------------------------------------


def test_a_wide_profile_shows_its_caps_and_the_traits_route_pages_the_rest(
    client: FlaskClient, team: TeamKeys, wide: str
) -> None:
    profile, size = get(client, team, f"/api/v1/customers/{wide}")
    assert len(profile["traits"]) == PROFILE_TRAITS
    assert profile["truncated"] == ["traits"]
    assert size < 60_000, size
    every = every_page(client, team, f"/api/v1/customers/{wide}/traits?limit=300", key="traits")
    assert len(every) == len(dict(every)) == MAX_TRAIT_KEYS
    assert dict(every)["bio"] == "x" * (SHOWN_VALUE + 500)  # the traits route shows values whole
    first, _ = get(client, team, f"/api/v1/customers/{wide}/traits")
    assert len(first["traits"]) == MAX_TRAIT_KEYS and first["next_cursor"] is None


def test_a_profile_with_thousands_of_memberships_is_capped_with_a_way_to_the_rest(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    count = 2_000
    send(
        engine,
        team,
        *(
            {"type": "group", "userId": "member", "groupId": f"g-{n:05}", "timestamp": at(n / 100),
             "messageId": f"g{n}", "traits": {"name": f"Company {n}", "plan": "pro"}}
            for n in range(count)
        ),
    )  # fmt: skip
    profile, size = get(client, team, "/api/v1/customers/user_id:member")
    assert len(profile["groups"]) == PROFILE_GROUPS
    assert profile["truncated"] == ["groups"]
    assert size < 40_000, size  # whole: ~300 KB
    groups = every_page(client, team, "/api/v1/customers/user_id:member/groups?limit=200")
    assert [group["id"] for group in groups] == [f"g-{n:05}" for n in range(count)]
    assert groups[7] == {
        "id": "g-00007",
        "name": "Company 7",
        "traits": {"name": "Company 7", "plan": "pro"},
        "joined_at": at(0.07),
        "truncated": [],
    }


def test_a_groups_cursor_from_another_list_is_a_400(client: FlaskClient, team: TeamKeys, wide: str) -> None:
    traits, _ = get(client, team, f"/api/v1/customers/{wide}/traits?limit=1")
    body, _ = get(client, team, f"/api/v1/customers/{wide}/groups?cursor={traits['next_cursor']}", 400)
    assert body["code"] == "invalid_cursor"


# -- external ids --------------------------------------------------------------------


@pytest.fixture
def many_ids(engine: Engine, team: TeamKeys) -> str:
    """A customer seen under 300 anonymousIds (each claimed by its identify) and one userId,
    with a few events each."""
    events: list[dict[str, Any]] = []
    for n in range(300):
        events.append({"type": "page", "anonymousId": f"anon-{n:03}", "timestamp": at(n),
                       "messageId": f"p{n}", "name": "Home"})  # fmt: skip
        events.append({"type": "identify", "userId": "many", "anonymousId": f"anon-{n:03}",
                       "timestamp": at(n + 0.5), "messageId": f"i{n}"})  # fmt: skip
    send(engine, team, *events)
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT customer_id FROM identities WHERE team_id = :t AND value = 'many'"), {"t": team.id}
        ).scalar_one()
    return str(found)


def test_external_ids_read_the_timeline_once_whatever_the_number_of_ids(
    engine: Engine, team: TeamKeys, many_ids: str
) -> None:
    with engine.connect() as connection:
        before = table_reads(connection, "events")
        found = read_external_ids(connection, team.id, int(many_ids), limit=1_000)
        after = table_reads(connection, "events")
    assert len(found) == 301
    scans = (after["idx_scan"] - before["idx_scan"]) + (after["seq_scan"] - before["seq_scan"])
    assert scans <= 2, scans  # one pass (and the email's one event); a walk per id was 301


def test_external_ids_are_paged_earliest_first_and_bounded(
    client: FlaskClient, team: TeamKeys, many_ids: str
) -> None:
    first, size = get(client, team, f"/api/v1/customers/{many_ids}/external_ids?limit=100")
    assert len(first["data"]) == 100 and first["next_cursor"]
    assert size < 20_000, size
    every = every_page(client, team, f"/api/v1/customers/{many_ids}/external_ids?limit=100")
    assert [(i["type"], i["value"]) for i in every[:3]] == [
        ("anonymous_id", "anon-000"),
        ("user_id", "many"),
        ("anonymous_id", "anon-001"),
    ]
    assert len(every) == len({i["value"] for i in every}) == 301
    assert every[1]["first_seen"] == at(0.5) and every[1]["first_message_id"] == "i0"
    assert every[-1] == {
        "type": "anonymous_id",
        "value": "anon-299",
        "first_seen": at(299),
        "first_message_id": "p299",
    }
    default, _ = get(client, team, f"/api/v1/customers/{many_ids}/external_ids")
    assert len(default["data"]) == 200


def test_a_profile_with_many_identities_shows_its_cap(
    client: FlaskClient, team: TeamKeys, many_ids: str
) -> None:
    profile, _ = get(client, team, f"/api/v1/customers/{many_ids}")
    assert len(profile["anonymous_ids"]) == PROFILE_IDS
    assert profile["anonymous_ids"][:2] == ["anon-000", "anon-001"]
    assert profile["user_ids"] == ["many"]
    assert profile["truncated"] == ["anonymous_ids"]


# -- ingest --------------------------------------------------------------------------


def test_an_event_over_the_trait_key_bound_is_a_400_saying_so(client: FlaskClient, team: TeamKeys) -> None:
    event = {"type": "identify", "userId": "u", "traits": {f"t{n}": n for n in range(MAX_TRAIT_KEYS + 1)}}
    response = client.post("/v1/identify", json=event, headers=team.basic(team.ingest))
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_event" and "traits" in body["errors"]
    assert f"at most {MAX_TRAIT_KEYS} trait keys" in body["message"]
    batch = [
        {"type": "track", "userId": "u", "event": "ok", "messageId": "ok"},
        {**event, "messageId": "wide"},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=team.basic(team.ingest))
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["messageId"]) for r in answer["rejected"]] == [(1, "wide")]
    assert f"at most {MAX_TRAIT_KEYS} trait keys" in answer["rejected"][0]["message"]


# -- the caps, in SQL and in the reference -------------------------------------------


def _wide_raws() -> list[dict[str, Any]]:
    long_text = "é" * (SHOWN_VALUE + 1)
    nested = {"list": list(range(400)), "note": "n"}  # its JSON text is over SHOWN_VALUE
    wide = {f"k{n}": n for n in range(SHOWN_KEYS + 10)} | {
        "a": long_text,
        "bb": nested,
        "ccc": [1, {"x": "y"}],
    }
    return [
        {"properties": wide, "traits": wide},
        {"properties": {"a": long_text}, "traits": {"n": nested}},
        {"properties": {f"p{n}": "v" for n in range(SHOWN_KEYS)}, "traits": {"exact": "x" * SHOWN_VALUE}},
    ]


def test_the_caps_postgres_applies_equal_the_reference(engine: Engine) -> None:
    from store.answers.feed_item import FEED_ITEM_SQL, FeedItemSchema
    from tests.app.test_customers import _ITEM_ROW
    from tests.store.reference import feed_item

    statement = text(_ITEM_ROW.format(item=FEED_ITEM_SQL))
    with engine.connect() as connection:
        for n, raw in enumerate(_wide_raws()):
            for kind in ("track", "identify", "group"):
                params = {
                    "id": n, "type": kind, "event_name": "E", "event_time": "2024-03-01T12:00:00Z",
                    "received_at": "2024-03-01T12:00:00Z", "message_id": f"m{n}", "user_id": "u",
                    "anonymous_id": None, "group_id": "g" if kind == "group" else None, "previous_id": None,
                    "raw": json.dumps(raw), "team": -1,
                }  # fmt: skip
                row = connection.execute(statement, params).one()
                built = json.loads(row.item)
                assert built == feed_item(row), (n, kind)
                assert list(built) == list(FeedItemSchema().fields)
        first = feed_item(connection.execute(statement, {**params, "raw": json.dumps(_wide_raws()[0])}).one())
        assert len(first["traits"]) == SHOWN_KEYS and first["truncated"] == ["traits"]
        assert first["traits"]["a"] == "é" * SHOWN_VALUE and isinstance(first["traits"]["bb"], str)


def test_a_capped_profile_equals_the_reference(
    client: FlaskClient, team: TeamKeys, engine: Engine, wide: str, many_ids: str
) -> None:
    from store.answers.profile import ProfileSchema
    from tests.store.reference import load_profile

    for customer in (wide, many_ids):
        profile, _ = get(client, team, f"/api/v1/customers/{customer}")
        with engine.connect() as connection:
            assert profile == ProfileSchema().dump(load_profile(connection, team.id, int(customer)))
