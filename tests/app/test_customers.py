"""The agents' read API over HTTP: search, lookup, profile and feed (SPEC §4)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from schemas.cursors import InstantPosition, decode_cursor, encode_cursor
from schemas.segment import prepare_event
from store.answers.customer_list_item import CUSTOMER_LIST_ITEM, CustomerSummarySchema
from store.answers.feed_item import FeedItemSchema
from store.answers.profile import ProfileSchema
from store.events import store_events
from store.feed import FeedFilter
from tests.conftest import TeamKeys
from tests.store.reference import load_feed, load_profile, search
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, *events: dict[str, Any]) -> None:
    """Store events as ingest would, then fold them."""
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def track(user: str, name: str, minute: float, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": at(minute),
        "messageId": message_id or f"{user}-{name}-{minute}",
        **extra,
    }


def get(client: FlaskClient, team: TeamKeys, url: str, status: int = 200) -> Any:
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def customer_of(client: FlaskClient, team: TeamKeys, user_id: str) -> str:
    found: str = get(client, team, f"/api/v1/customers/lookup?user_id={user_id}")["id"]
    return found


def every_page(client: FlaskClient, team: TeamKeys, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    separator = "&" if "?" in url else "?"
    while True:
        page = get(client, team, url + (f"{separator}cursor={cursor}" if cursor else ""))
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# -- search --------------------------------------------------------------------------


@pytest.fixture
def people(engine: Engine, team: TeamKeys) -> TeamKeys:
    """Three known customers and one anonymous visitor, seen at different times."""
    send(
        engine,
        team,
        {"type": "identify", "userId": "u-ada", "timestamp": at(1), "messageId": "i1",
         "traits": {"email": "Ada.Lovelace@Example.com", "name": "Ada Lovelace"}},
        {"type": "identify", "userId": "u-alan", "timestamp": at(3), "messageId": "i2",
         "traits": {"email": "alan@example.com", "firstName": "Alan", "lastName": "Turing"}},
        {"type": "identify", "userId": "u-grace", "timestamp": at(2), "messageId": "i3",
         "traits": {"email": "grace@navy.mil", "name": "Grace Hopper"}},
        {"type": "page", "anonymousId": "anon-a1b2", "name": "Pricing", "timestamp": at(4),
         "messageId": "p1"},
    )  # fmt: skip
    return team


def names(page: dict[str, Any]) -> list[str | None]:
    return [customer["name"] for customer in page["data"]]


def test_search_matches_a_prefix_of_email_name_user_id_or_anonymous_id_in_any_case(
    client: FlaskClient, people: TeamKeys
) -> None:
    assert names(get(client, people, "/api/v1/customers?q=ada.LOVE")) == ["Ada Lovelace"]
    assert names(get(client, people, "/api/v1/customers?q=alan%20t")) == ["Alan Turing"]
    assert names(get(client, people, "/api/v1/customers?q=U-GRA")) == ["Grace Hopper"]
    found = get(client, people, "/api/v1/customers?q=ANON-A1")["data"]
    assert [customer["anonymous_ids"] for customer in found] == [["anon-a1b2"]]
    assert get(client, people, "/api/v1/customers?q=lovelace")["data"] == []  # a prefix, not a substring


def test_search_lists_the_most_recently_seen_first(client: FlaskClient, people: TeamKeys) -> None:
    page = get(client, people, "/api/v1/customers?q=a")
    assert names(page) == [None, "Alan Turing", "Ada Lovelace"]  # anon-a1b2 at 4, alan 3, ada 1
    everyone = get(client, people, "/api/v1/customers")
    assert names(everyone) == [None, "Alan Turing", "Grace Hopper", "Ada Lovelace"]
    assert everyone["next_cursor"] is None


def test_search_result_is_a_customer_summary(client: FlaskClient, people: TeamKeys) -> None:
    (ada,) = get(client, people, "/api/v1/customers?q=ada")["data"]
    assert ada == {
        "id": ada["id"],
        "user_ids": ["u-ada"],
        "anonymous_ids": [],
        "email": "Ada.Lovelace@Example.com",
        "name": "Ada Lovelace",
        "first_seen": at(1),
        "last_seen": at(1),
        "event_count": 1,
    }


def test_search_pages_with_a_cursor(client: FlaskClient, people: TeamKeys) -> None:
    pages = []
    url = "/api/v1/customers?limit=1"
    cursor = None
    while True:
        page = get(client, people, url + (f"&cursor={cursor}" if cursor else ""))
        pages.append(names(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[None], ["Alan Turing"], ["Grace Hopper"], ["Ada Lovelace"]]


def test_search_treats_like_wildcards_as_text(client: FlaskClient, people: TeamKeys) -> None:
    assert get(client, people, "/api/v1/customers?q=%25")["data"] == []
    assert get(client, people, "/api/v1/customers?q=_")["data"] == []


@pytest.mark.parametrize("limit", [1, 2, 50])
def test_every_search_page_postgres_builds_equals_the_reference(
    client: FlaskClient, people: TeamKeys, engine: Engine, limit: int
) -> None:
    send(
        engine,
        people,
        {"type": "page", "anonymousId": "anon-z", "timestamp": at(5), "messageId": "p2"},
        {"type": "page", "anonymousId": "anon-b", "timestamp": at(5.5), "messageId": "p3"},
        {"type": "identify", "userId": "u-bo", "anonymousId": "anon-z", "timestamp": at(6), "messageId": "i4",
         "traits": {"name": "Bö \u2028 \"Quoted\""}},
        {"type": "identify", "userId": "u-bo", "anonymousId": "anon-b", "timestamp": at(6.5),
         "messageId": "i5"},
        {"type": "alias", "previousId": "u-ada", "userId": "u-ada-2", "timestamp": at(7), "messageId": "a1"},
        track("u-grace", "Paid", 3),  # last seen when alan was: the id orders them
    )  # fmt: skip
    fields = [field.name for field in CUSTOMER_LIST_ITEM.fields]
    for query in ("", "a", "U-", "anon", "Bö", "nobody"):
        after: InstantPosition | None = None
        cursor = None
        while True:
            url = f"/api/v1/customers?q={query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            response = client.get(url, headers=people.bearer(people.read))
            assert response.status_code == 200 and response.mimetype == "application/json"
            page = json.loads(response.get_data(as_text=True))
            with engine.connect() as connection:
                items, following = search(connection, people.id, query, limit=limit, after=after)
            assert page["data"] == CustomerSummarySchema(many=True).dump(items), (query, after)
            assert all(list(item) == fields for item in page["data"])
            assert page["next_cursor"] == (
                encode_cursor("customers", following, "desc") if following else None
            )
            cursor, after = page["next_cursor"], following
            if cursor is None:
                break
            assert decode_cursor(cursor, "customers", InstantPosition).position == following


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("q=" + "x" * 256, "q"),
        ("q=a%00b", "q"),
        ("sort=name", "sort"),
    ],
)
def test_bad_search_arguments_are_a_400_naming_the_argument(
    client: FlaskClient, team: TeamKeys, query: str, field: str
) -> None:
    body = get(client, team, f"/api/v1/customers?{query}", status=400)
    assert set(body) == {"message", "code", "errors"}
    assert field in body["errors"]
    assert field in body["message"]


# -- lookup and profile --------------------------------------------------------------


def test_lookup_by_user_id_email_or_anonymous_id(client: FlaskClient, people: TeamKeys) -> None:
    ada = customer_of(client, people, "u-ada")
    assert get(client, people, "/api/v1/customers/lookup?email=ADA.lovelace@example.COM")["id"] == ada
    anonymous = get(client, people, "/api/v1/customers/lookup?anonymous_id=anon-a1b2")
    assert anonymous["anonymous_ids"] == ["anon-a1b2"]
    assert anonymous["user_ids"] == []


@pytest.mark.parametrize("query", ["", "user_id=u-ada&email=alan@example.com", "user_id=", "userId=u-ada"])
def test_lookup_needs_exactly_one_id(client: FlaskClient, people: TeamKeys, query: str) -> None:
    body = get(client, people, f"/api/v1/customers/lookup?{query}", status=400)
    assert body["code"] == "invalid_query"


@pytest.mark.parametrize(
    "query", ["user_id=nobody", "email=nobody@example.com", "anonymous_id=nobody", "user_id=U-ADA"]
)
def test_lookup_of_an_unknown_id_is_404(client: FlaskClient, people: TeamKeys, query: str) -> None:
    assert get(client, people, f"/api/v1/customers/lookup?{query}", status=404)["code"] == "not_found"


def test_profile_has_the_fields_spec_lists(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(
        engine,
        team,
        {"type": "page", "anonymousId": "v1", "name": "Home", "timestamp": at(0), "messageId": "p0"},
        {"type": "identify", "userId": "u1", "anonymousId": "v1", "timestamp": at(1), "messageId": "i1",
         "traits": {"email": "jo@example.com", "first_name": "Jo", "plan": "pro"}},
        {"type": "group", "userId": "u1", "groupId": "g-acme", "timestamp": at(2), "messageId": "g1",
         "traits": {"name": "Acme", "employees": 40}},
        track("u1", "Signed Up", 3),
    )  # fmt: skip
    profile = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u1')}")
    assert list(profile) == [
        "id",
        "user_ids",
        "anonymous_ids",
        "email",
        "name",
        "traits",
        "groups",
        "first_seen",
        "last_seen",
        "event_count",
        "truncated",
        "presence",
    ]
    assert profile["presence"] == {"active_now": False, "last_seen": profile["last_seen"], "place": None}
    assert profile["user_ids"] == ["u1"]
    assert profile["anonymous_ids"] == ["v1"]
    assert (profile["email"], profile["name"]) == ("jo@example.com", "Jo")
    assert profile["traits"] == {"email": "jo@example.com", "first_name": "Jo", "plan": "pro"}
    assert profile["groups"] == [
        {
            "id": "g-acme",
            "name": "Acme",
            "traits": {"name": "Acme", "employees": 40},
            "joined_at": at(2),
            "truncated": [],
        }
    ]
    assert (profile["first_seen"], profile["last_seen"], profile["event_count"]) == (at(0), at(3), 4)


def merged_pair(engine: Engine, team: TeamKeys) -> tuple[int, int]:
    """Two customers joined by an alias: (merged-away id, survivor id)."""
    send(engine, team, track("old-id", "Opened App", 0), track("new-id", "Paid", 1))
    with engine.connect() as connection:
        before = dict(
            connection.exec_driver_sql(
                "SELECT value, customer_id FROM identities WHERE team_id = %s", (team.id,)
            ).all()
        )
    send(
        engine,
        team,
        {"type": "alias", "previousId": "old-id", "userId": "new-id", "timestamp": at(2), "messageId": "a1"},
    )
    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT id, merged_into FROM customers WHERE team_id = %s AND merged_into IS NOT NULL",
            (team.id,),
        ).one()
    assert {row.id, row.merged_into} == set(before.values())
    return row.id, row.merged_into


def test_a_merged_away_id_answers_308_to_the_survivor(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    gone, survivor = merged_pair(engine, team)
    response = client.get(f"/api/v1/customers/{gone}", headers=team.bearer(team.read))
    assert response.status_code == 308
    assert response.headers["Location"] == f"/api/v1/customers/{survivor}"
    assert response.get_json()["id"] == str(survivor)
    followed = client.get(f"/api/v1/customers/{gone}", headers=team.bearer(team.read), follow_redirects=True)
    assert followed.status_code == 200
    assert sorted(followed.get_json()["user_ids"]) == ["new-id", "old-id"]


def test_a_merged_away_feed_redirects_with_its_query(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    gone, survivor = merged_pair(engine, team)
    url = f"/api/v1/customers/{gone}/feed?type=track&type=alias&limit=2"
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == 308
    assert response.headers["Location"] == f"/api/v1/customers/{survivor}/feed?type=track&type=alias&limit=2"
    followed = client.get(url, headers=team.bearer(team.read), follow_redirects=True).get_json()
    assert [item["type"] for item in followed["data"]] == ["alias", "track"]


@pytest.mark.parametrize("raw_id", ["abc", "12a", "1" * 19, "-1", "²", "999999999999"])
def test_an_unknown_customer_id_is_404(client: FlaskClient, team: TeamKeys, raw_id: str) -> None:
    assert get(client, team, f"/api/v1/customers/{raw_id}", status=404)["code"] == "not_found"
    assert get(client, team, f"/api/v1/customers/{raw_id}/feed", status=404)["code"] == "not_found"


def test_reading_needs_the_read_scope(client: FlaskClient, team: TeamKeys) -> None:
    response = client.get("/api/v1/customers", headers=team.bearer(team.ingest))
    assert response.status_code == 403
    assert client.get("/api/v1/customers").status_code == 401


# -- the feed ------------------------------------------------------------------------


def test_feed_items_are_shaped_as_spec_says(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    context = {
        "ip": "203.0.113.9",
        "locale": "de-CH",
        "userAgent": "Mozilla/5.0",
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "page": {"url": "https://example.com/pricing", "title": "Pricing"},
    }
    send(
        engine,
        team,
        {"type": "page", "userId": "u1", "name": "Pricing", "timestamp": at(0), "messageId": "p1",
         "properties": {"path": "/pricing"}, "context": context},
        track("u1", "Order Completed", 1, properties={"total": 30}, context={"ip": 7}),
        {"type": "identify", "userId": "u1", "timestamp": at(2), "messageId": "i1",
         "traits": {"plan": "pro"}},
        {"type": "group", "userId": "u1", "groupId": "g1", "timestamp": at(3), "messageId": "g1",
         "traits": {"name": "Acme"}},
        {"type": "screen", "userId": "u1", "name": "Home", "timestamp": at(4), "messageId": "s1"},
        {"type": "alias", "previousId": "p-1", "userId": "u1", "timestamp": at(5), "messageId": "a1"},
    )  # fmt: skip
    feed = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u1')}/feed?order=asc")
    page, order, identify, group, screen, alias = feed["data"]
    assert page == {
        "id": page["id"],
        "type": "page",
        "summary": "Viewed page Pricing",
        "event": None,
        "name": "Pricing",
        "timestamp": at(0),
        "received_at": page["received_at"],
        "message_id": "p1",
        "user_id": "u1",
        "anonymous_id": None,
        "properties": {"path": "/pricing"},
        "traits": None,
        "group_id": None,
        "previous_id": None,
        "changes": None,
        "context": {
            "page_url": "https://example.com/pricing",
            "page_title": "Pricing",
            "page_path": "/pricing",  # from properties: context.page has none
            "page_referrer": None,
            "user_agent": "Mozilla/5.0",
            "ip": "203.0.113.9",
            "locale": "de-CH",
            "library": {"name": "analytics.js", "version": "2.11.1"},
        },
        "truncated": [],
    }
    assert (order["event"], order["properties"], order["summary"]) == (
        "Order Completed",
        {"total": 30},
        "Order Completed",
    )
    assert order["context"]["ip"] is None  # not a string: the API promises strings or null
    assert [item["context"]["locale"] for item in feed["data"]] == ["de-CH", None, None, None, None, None]
    assert (identify["traits"], identify["properties"], identify["summary"], identify["changes"]) == (
        {"plan": "pro"},
        None,
        "Traits updated",
        [{"trait": "plan", "from": None, "to": "pro"}],
    )
    assert (group["group_id"], group["traits"], group["summary"]) == (
        "g1",
        {"name": "Acme"},
        "Joined group Acme",
    )
    assert (screen["name"], screen["summary"]) == ("Home", "Viewed screen Home")
    assert (alias["previous_id"], alias["summary"]) == ("p-1", "Identified as u1")
    assert feed["next_cursor"] is None
    # The items are built by hand for speed: they must be exactly what the documented schema says.
    schema = FeedItemSchema()
    for item in feed["data"]:
        assert schema.dump(schema.load(item)) == item


@pytest.fixture
def journey(engine: Engine, team: TeamKeys, client: FlaskClient) -> tuple[TeamKeys, str]:
    """u1's timeline: page 0, track A 1, track B 2, identify 3, track A 4, page 5."""
    send(
        engine,
        team,
        {"type": "page", "userId": "u1", "name": "Home", "timestamp": at(0), "messageId": "p0"},
        track("u1", "A", 1),
        track("u1", "B", 2),
        {"type": "identify", "userId": "u1", "timestamp": at(3), "messageId": "i3", "traits": {"x": 1}},
        track("u1", "A", 4),
        {"type": "page", "userId": "u1", "name": "Docs", "timestamp": at(5), "messageId": "p5"},
    )  # fmt: skip
    return team, "/api/v1/customers/" + customer_of(client, team, "u1") + "/feed"


def minutes(page: dict[str, Any]) -> list[int]:
    return [
        int((datetime.fromisoformat(item["timestamp"]) - T0).total_seconds() // 60) for item in page["data"]
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [5, 4, 3, 2, 1, 0]),
        ("order=asc", [0, 1, 2, 3, 4, 5]),
        ("type=page", [5, 0]),
        ("type=page&type=identify", [5, 3, 0]),
        ("event=A", [4, 1]),
        ("event=A&event=B", [4, 2, 1]),
        ("type=page&event=B", [5, 2, 0]),
        ("type=track&event=B", [2]),
        ("exclude_event=A", [5, 3, 2, 0]),
        ("type=track&exclude_event=A", [2]),
        ("since=" + at(2), [5, 4, 3, 2]),
        ("until=" + at(2), [1, 0]),
        ("since=" + at(1) + "&until=" + at(4) + "&order=asc", [1, 2, 3]),
        ("since=2024-03-01T13:02:00%2B01:00", [5, 4, 3, 2]),  # an offset
        ("since=2024-03-01T13:02:00+01:00", [5, 4, 3, 2]),  # its + not escaped: read as meant
        ("event=Nope", []),
    ],
)
def test_feed_filters(
    client: FlaskClient, journey: tuple[TeamKeys, str], query: str, expected: list[int]
) -> None:
    team, url = journey
    assert minutes(get(client, team, f"{url}?{query}")) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=delete", "type"),
        ("type=Track", "type"),
        ("order=newest", "order"),
        ("limit=201", "limit"),
        ("since=yesterday", "since"),
        ("since=" + at(5) + "&until=" + at(1), "since"),
        ("event=", "event"),
        ("types=track", "types"),
    ],
)
def test_bad_feed_arguments_are_a_400(
    client: FlaskClient, journey: tuple[TeamKeys, str], query: str, field: str
) -> None:
    team, url = journey
    body = get(client, team, f"{url}?{query}", status=400)
    assert body["code"] == "invalid_query"
    assert field in body["errors"]


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "%FF%FE",
        cursor_of({"a": 1}),
        cursor_of(["feed", "desc", "2024-03-01T12:00:00+00:00", 1]),
        cursor_of(["feed", "desc", "2024-03-01T12:00:00", 1, 2]),  # naive time
        cursor_of(["feed", "desc", "2024-03-01T12:00:00+00:00", 2**63, 2]),  # not a bigint
        cursor_of(["feed", "desc", "2024-03-01T12:00:00+00:00", True, 2]),
        cursor_of(["feed", "sideways", "2024-03-01T12:00:00+00:00", 1, 2]),
        cursor_of(["customers", "desc", "2024-03-01T12:00:00+00:00", 1]),  # another list's
        cursor_of(["feed", "asc", "2024-03-01T12:00:00+00:00", 1, 2]),  # another order's
    ],
)
def test_a_forged_or_foreign_cursor_is_a_400(
    client: FlaskClient, journey: tuple[TeamKeys, str], cursor: str
) -> None:
    team, url = journey
    body = get(client, team, f"{url}?cursor={cursor}", status=400)
    assert body["code"] == "invalid_cursor"
    assert "cursor" in body["errors"]


def test_a_well_formed_cursor_from_elsewhere_is_just_a_position(
    client: FlaskClient, journey: tuple[TeamKeys, str]
) -> None:
    team, url = journey
    cursor = cursor_of(["feed", "desc", at(3), -(2**63), 0])  # before everything at minute 3
    assert minutes(get(client, team, f"{url}?cursor={cursor}")) == [2, 1, 0]


def test_feed_limit_and_cursor_walk_every_item_once(
    client: FlaskClient, journey: tuple[TeamKeys, str]
) -> None:
    team, url = journey
    for order, expected in (("desc", [5, 4, 3, 2, 1, 0]), ("asc", [0, 1, 2, 3, 4, 5])):
        items = every_page(client, team, f"{url}?limit=4&order={order}")
        assert minutes({"data": items}) == expected
    items = every_page(client, team, f"{url}?limit=1&type=track")
    assert minutes({"data": items}) == [4, 2, 1]


def test_paging_while_events_arrive_never_repeats_or_skips(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    # 30 events, two per minute, so pages also end between events of one instant.
    send(engine, team, *(track("pager", f"E{n}", n // 2) for n in range(30)))
    feed = f"/api/v1/customers/{customer_of(client, team, 'pager')}/feed"
    for order in ("desc", "asc"):
        existing = [item["id"] for item in get(client, team, f"{feed}?limit=200")["data"]]
        seen: list[str] = []
        cursor = None
        rounds = 0
        while True:
            page = get(
                client, team, f"{feed}?limit=4&order={order}" + (f"&cursor={cursor}" if cursor else "")
            )
            seen += [item["id"] for item in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            rounds += 1
            boundary = page["data"][-1]["timestamp"]
            send(
                engine,
                team,
                track("pager", "newer", 1000 + rounds, f"{order}-new-{rounds}"),
                track("pager", "late", -100 - rounds, f"{order}-late-{rounds}"),  # old-dated, arrives late
                track("pager", "middle", 7, f"{order}-mid-{rounds}"),
                {**track("pager", "boundary", 0, f"{order}-edge-{rounds}"), "timestamp": boundary},
            )
        assert rounds >= 7
        assert len(seen) == len(set(seen)), "an item was shown twice"
        assert set(existing) <= set(seen), "an item that existed at the first page was skipped"


def test_a_filtered_feed_reads_a_bounded_stretch_and_still_finds_everything(
    team: TeamKeys, engine: Engine, client: FlaskClient
) -> None:
    send(engine, team, *(track("u1", "Rare" if n % 7 == 3 else "Common", n) for n in range(40)))
    customer = int(customer_of(client, team, "u1"))
    rare = FeedFilter(events=("Rare",))
    found: list[int] = []
    pages = 0
    after = None
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        while True:
            items, after = load_feed(
                connection, team.id, customer, limit=2, after=after, filters=rare, budget=5
            )
            pages += 1
            found += minutes({"data": items})
            if after is None:
                break
    assert found == [38, 31, 24, 17, 10, 3]
    # 40 events read 5 at a time: 8 windows, most pages empty yet with a cursor, and a
    # last empty page because the 8th window ended exactly at the first event.
    assert pages == 9


# -- the feed's items are built by Postgres: the same as the Python reference ---------

_ITEM_ROW = """
    SELECT ({item})::text AS item, e.* FROM (VALUES (
        CAST(:id AS bigint), CAST(:type AS text), CAST(:event_name AS text),
        CAST(:event_time AS timestamptz), CAST(:received_at AS timestamptz), CAST(:message_id AS text),
        CAST(:user_id AS text), CAST(:anonymous_id AS text), CAST(:group_id AS text),
        CAST(:previous_id AS text), CAST(0 AS bigint), CAST(:raw AS jsonb)
    )) AS e(id, type, event_name, event_time, received_at, message_id, user_id, anonymous_id,
            group_id, previous_id, tiebreak, raw)
"""

_ODD_VALUES: list[Any] = [
    None, "", "text", "ünïcødé \u2028 \"quoted\" \\", 7, 1.5, 1e300, True, False, [], [1, "a"], {},
    {"name": 3}, {"name": "Acme", "nested": {"a": [1, {"b": None}]}},
]  # fmt: skip


def _odd_raws() -> list[Any]:
    raws: list[Any] = [[], "a string", 7, None, {}]
    for value in _ODD_VALUES:
        # Ingest stores ids as strings (numbers converted): a summary never shows a list.
        some_id = value if not isinstance(value, list | dict) else "an-id"
        raws += [
            {"properties": value, "traits": value, "groupId": some_id, "userId": some_id},
            {"context": value},
            {"context": {"page": value, "userAgent": value, "ip": value, "locale": value, "library": value}},
            {"context": {"page": {"url": value, "title": value}}},
            {"traits": {"name": value}, "groupId": "g-1"},
            {"properties": {"url": value, "title": value, "path": value, "referrer": value}},
            {"traits": {"company": value}},
        ]
    for company_id in ("c-1", 7, 1.5, "", None, True):
        raws += [
            {"traits": {"company": {"id": company_id, "name": "Acme", "remove": True}}},
            {"traits": {"company": {"id": company_id, "name": 3, "remove": True}}},
            {"traits": {"company": {"id": company_id, "remove": "true"}}},
        ]
    return raws


def _item_rows() -> list[dict[str, Any]]:
    times = ["2024-03-01T12:00:00Z", "2024-03-01T12:00:00.000001Z", "2024-03-01T12:00:00.5+02:00",
             "2024-12-31T23:59:59.999999-05:00", "0999-01-02T03:04:05Z"]  # fmt: skip
    rows = []
    for n, raw in enumerate(_odd_raws()):
        for kind, name in [("track", "Order Completed"), ("track", None), ("page", ""), ("page", "Pricing"),
                           ("screen", None), ("screen", "Home"), ("identify", None), ("group", None),
                           ("alias", None), ("other", "x")]:  # fmt: skip
            rows.append(
                {
                    "id": n * 100 + len(rows),
                    "type": kind,
                    "event_name": name,
                    "event_time": times[len(rows) % len(times)],
                    "received_at": times[(len(rows) + 1) % len(times)],
                    "message_id": f"m-{len(rows)}",
                    "user_id": "u1" if n % 2 else None,
                    "anonymous_id": None if n % 2 else "a1",
                    "group_id": "g1" if kind == "group" else None,
                    "previous_id": "p1" if kind == "alias" else None,
                    "raw": json.dumps(raw),
                }
            )
    return rows


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_the_items_postgres_builds_equal_the_reference_item(engine: Engine, timezone: str) -> None:
    from sqlalchemy import text

    from store.answers.feed_item import FEED_ITEM_SQL
    from tests.store.reference import feed_item

    statement = text(_ITEM_ROW.format(item=FEED_ITEM_SQL))
    fields = list(FeedItemSchema().fields)
    with engine.connect() as connection:
        connection.execute(text(f"SET LOCAL TIME ZONE '{timezone}'"))
        for params in _item_rows():
            row = connection.execute(statement, {**params, "team": -1}).one()
            built = json.loads(row.item)
            assert built == feed_item(row), params
            assert list(built) == fields, "every key, in the documented order"


def test_feed_timestamps_keep_their_microseconds_only_when_not_zero(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(
        engine,
        team,
        track("u1", "A", 0, message_id="whole"),
        track("u1", "B", 0.5 / 60_000_000 * 2, message_id="micro"),  # one microsecond later
        track("u1", "C", 1.25 / 60, message_id="quarter"),
    )
    feed = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u1')}/feed?order=asc")
    assert [item["timestamp"] for item in feed["data"]] == [
        "2024-03-01T12:00:00Z",
        "2024-03-01T12:00:00.000001Z",
        "2024-03-01T12:00:01.250000Z",
    ]
    for item in feed["data"]:
        assert item["received_at"].endswith("Z")
        assert datetime.fromisoformat(item["received_at"]).tzinfo is not None


def test_the_feed_answers_one_json_body_with_a_working_cursor(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(engine, team, *(track("u1", f"E{n}", n) for n in range(5)))
    url = f"/api/v1/customers/{customer_of(client, team, 'u1')}/feed?limit=2"
    response = client.get(url, headers=team.bearer(team.read))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data(as_text=True))
    assert list(body) == ["data", "next_cursor"]
    assert [item["event"] for item in body["data"]] == ["E4", "E3"]
    assert [item["event"] for item in every_page(client, team, url)] == [f"E{n}" for n in range(4, -1, -1)]


def test_the_profile_postgres_builds_equals_the_schema_dump(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(
        engine,
        team,
        {"type": "page", "anonymousId": "v2", "name": "Home", "timestamp": "2024-03-01T12:00:00.25Z",
         "messageId": "p0"},
        {"type": "page", "anonymousId": "v1", "name": "Home", "timestamp": at(0.5), "messageId": "p1"},
        {"type": "identify", "userId": "u1", "anonymousId": "v1", "timestamp": at(1), "messageId": "i1",
         "traits": {"email": "jo@example.com", "b": [1, {"x": None}], "a": 1.5, "ü": "ß", "n": None}},
        {"type": "identify", "userId": "u1", "anonymousId": "v2", "timestamp": at(1.5), "messageId": "i2"},
        {"type": "group", "userId": "u1", "groupId": "g-b", "timestamp": at(2), "messageId": "g1",
         "traits": {"employees": 40}},
        {"type": "group", "userId": "u1", "groupId": "g-a", "timestamp": at(2), "messageId": "g2",
         "traits": {"name": "Acme", "plan": {"tier": 2}}},
        {"type": "alias", "previousId": "u0", "userId": "u1", "timestamp": at(3), "messageId": "a1"},
    )  # fmt: skip
    customer = customer_of(client, team, "u1")
    response = client.get(f"/api/v1/customers/{customer}", headers=team.bearer(team.read))
    assert response.status_code == 200 and response.mimetype == "application/json"
    profile = json.loads(response.get_data(as_text=True))
    # The reference: the profile read in plain queries, dumped through ProfileSchema.
    with engine.connect() as connection:
        reference = ProfileSchema().dump(load_profile(connection, team.id, int(customer)))
    assert profile == reference
    assert list(profile) == list(reference)
    # The lookup answers the very same profile.
    assert profile == get(client, team, "/api/v1/customers/lookup?user_id=u1")
    assert list(profile) == list(get(client, team, "/api/v1/customers/lookup?user_id=u1"))
    assert profile["first_seen"] == "2024-03-01T12:00:00.250000Z"
    assert [group["id"] for group in profile["groups"]] == ["g-a", "g-b"]


# -- external ids, traits, identities, event summary, changes (issue 16) ---------------


def identify(
    user: str, minute: float, message_id: str, anonymous_id: str | None = None, **traits: Any
) -> Any:
    event = {
        "type": "identify",
        "userId": user,
        "timestamp": at(minute),
        "messageId": message_id,
        "traits": traits,
    }
    if anonymous_id:
        event["anonymousId"] = anonymous_id
    return event


@pytest.mark.parametrize(
    "ref",
    ["user_id:u%2F1", "email:ADA%40example.com", "anonymous_id:v%201", "user_id:u/1"],
    ids=["user_id", "email any case", "anonymous_id", "unencoded slash"],
)
@pytest.mark.parametrize("route", ["", "/feed", "/traits", "/external_ids", "/events/summary"])
def test_every_customer_route_takes_an_external_id(
    client: FlaskClient, team: TeamKeys, engine: Engine, ref: str, route: str
) -> None:
    send(
        engine,
        team,
        {"type": "page", "anonymousId": "v 1", "name": "Home", "timestamp": at(0), "messageId": "p0"},
        identify("u/1", 1, "i1", anonymous_id="v 1", email="ada@example.com"),
    )
    by_id = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u%2F1')}{route}")
    assert get(client, team, f"/api/v1/customers/{ref}{route}") == by_id


@pytest.mark.parametrize(
    "ref", ["user_id:nobody", "email:no%40one.test", "anonymous_id:", "phone:1", "user_id:a%00b"]
)
def test_an_unknown_external_id_is_404(client: FlaskClient, team: TeamKeys, engine: Engine, ref: str) -> None:
    send(engine, team, identify("u1", 1, "i1"))
    for route in ("", "/feed", "/traits", "/external_ids", "/events/summary"):
        assert get(client, team, f"/api/v1/customers/{ref}{route}", 404)["code"] == "not_found"


def test_another_teams_external_id_is_404(
    client: FlaskClient, team: TeamKeys, other_team: TeamKeys, engine: Engine
) -> None:
    send(engine, other_team, identify("theirs", 1, "i1"))
    get(client, team, "/api/v1/customers/user_id:theirs/traits", 404)


@pytest.mark.parametrize("route", ["/traits?verbose=true", "/external_ids", "/events/summary"])
def test_a_merged_away_id_answers_308_on_the_new_routes(
    client: FlaskClient, team: TeamKeys, engine: Engine, route: str
) -> None:
    merged, live = merged_pair(engine, team)
    response = client.get(f"/api/v1/customers/{merged}{route}", headers=team.bearer(team.read))
    assert response.status_code == 308
    assert response.headers["Location"] == f"/api/v1/customers/{live}{route}"
    assert response.get_json()["id"] == str(live)


@pytest.mark.parametrize("order", ["newer last", "newer first"])
def test_traits_verbose_say_when_and_by_which_message(
    client: FlaskClient, team: TeamKeys, engine: Engine, order: str
) -> None:
    older = identify("u1", 1, "old", plan="free", email="a@x.test")
    newer = identify("u1", 2, "new", plan="pro")
    send(engine, team, *((older, newer) if order == "newer last" else (newer, older)))
    ref = "/api/v1/customers/user_id:u1/traits"
    assert get(client, team, ref) == {"traits": {"email": "a@x.test", "plan": "pro"}, "next_cursor": None}
    assert get(client, team, ref + "?verbose=true") == {
        "traits": {
            "email": {"value": "a@x.test", "updated_at": at(1), "message_id": "old"},
            "plan": {"value": "pro", "updated_at": at(2), "message_id": "new"},
        },
        "next_cursor": None,
    }
    # include picks traits, spelled any way the fold reads as the same key
    assert get(client, team, ref + "?include=PLAN,nope") == {"traits": {"plan": "pro"}, "next_cursor": None}
    assert get(client, team, ref + "?include=plan&include=e-mail") == {
        "traits": {"email": "a@x.test", "plan": "pro"},
        "next_cursor": None,
    }


@pytest.mark.parametrize("query", ["verbose=yes", "include=", "include=a,,b", "includes=plan"])
def test_bad_traits_arguments_are_a_400(
    client: FlaskClient, team: TeamKeys, engine: Engine, query: str
) -> None:
    send(engine, team, identify("u1", 1, "i1", plan="pro"))
    body = get(client, team, f"/api/v1/customers/user_id:u1/traits?{query}", 400)
    assert body["code"] == "invalid_query" and body["errors"]


def test_external_ids_with_first_seen_and_first_message(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(
        engine,
        team,
        track("u1", "Late", 5, anonymousId="v1"),
        {"type": "page", "anonymousId": "v1", "name": "Home", "timestamp": at(0), "messageId": "p0"},
        identify("u1", 2, "i1", anonymous_id="v1", email="first@x.test"),
        identify("u1", 3, "i2", email="first@x.test"),
    )
    assert get(client, team, "/api/v1/customers/user_id:u1/external_ids") == {
        "data": [
            {"type": "anonymous_id", "value": "v1", "first_seen": at(0), "first_message_id": "p0"},
            {"type": "email", "value": "first@x.test", "first_seen": at(2), "first_message_id": "i1"},
            {"type": "user_id", "value": "u1", "first_seen": at(2), "first_message_id": "i1"},
        ],
        "next_cursor": None,
    }


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_event_summary_counts_per_name_through_a_merge(
    client: FlaskClient, team: TeamKeys, engine: Engine, order: str
) -> None:
    events = [
        {"type": "page", "anonymousId": "v1", "name": "Pricing", "timestamp": at(0), "messageId": "p0"},
        {"type": "page", "anonymousId": "v1", "timestamp": at(1), "messageId": "p1"},
        track("u1", "Paid", 2),
        track("u1", "Paid", 4),
        {"type": "screen", "userId": "u1", "name": "Home", "timestamp": at(3), "messageId": "s0"},
        identify("u1", 5, "i1", anonymous_id="v1"),  # the visitor joins u1
    ]
    for event in events if order == "in order" else events[::-1]:
        send(engine, team, event)
    assert get(client, team, "/api/v1/customers/user_id:u1/events/summary")["data"] == [
        {"type": "track", "name": "Paid", "count": 2, "first_seen": at(2), "last_seen": at(4)},
        {"type": "page", "name": None, "count": 1, "first_seen": at(1), "last_seen": at(1)},
        {"type": "page", "name": "Pricing", "count": 1, "first_seen": at(0), "last_seen": at(0)},
        {"type": "screen", "name": "Home", "count": 1, "first_seen": at(3), "last_seen": at(3)},
    ]


def test_event_summary_follows_a_delete(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    # A delete erases what was received before it, whatever its time (SPEC §3); an event
    # received after it and dated after it starts the person anew, and only it is counted.
    # Times near now: a delete dated far from its receipt is placed at its receipt.
    def near_now(minutes: float) -> str:
        return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()

    first, later = near_now(-10), near_now(1)
    send(engine, team, {**track("u1", "Paid", 0, "p1"), "timestamp": first})
    send(engine, team, {**track("u1", "Paid", 0, "p3"), "timestamp": near_now(5)})  # dated after it
    send(engine, team, {"type": "delete", "userId": "u1", "timestamp": near_now(-5), "messageId": "d1"})
    send(engine, team, {**track("u1", "Paid", 0, "p2"), "timestamp": later})
    summary = get(client, team, "/api/v1/customers/user_id:u1/events/summary")["data"]
    assert [(item["name"], item["count"]) for item in summary] == [("Paid", 1)]
    assert datetime.fromisoformat(summary[0]["first_seen"]) == datetime.fromisoformat(later)


def changes_of(client: FlaskClient, team: TeamKeys) -> dict[str, Any]:
    feed = get(client, team, "/api/v1/customers/user_id:u1/feed?type=identify&order=asc")
    return {item["message_id"]: item["changes"] for item in feed["data"]}


@pytest.mark.parametrize("order", ["in order", "reversed", "middle last"])
def test_identify_items_say_what_changed_whatever_the_arrival_order(
    client: FlaskClient, team: TeamKeys, engine: Engine, order: str
) -> None:
    first = identify("u1", 1, "i1", plan="free", email="a@x.test")
    middle = identify("u1", 2, "i2", plan="pro", email="a@x.test")
    last = {**identify("u1", 3, "i3", Plan="enterprise"), "context": {"traits": {"seats": 5}}}
    arrival = {
        "in order": [first, middle, last],
        "reversed": [last, middle, first],
        "middle last": [first, last, middle],
    }
    for event in arrival[order]:
        send(engine, team, event)
    assert changes_of(client, team) == {
        "i1": [
            {"trait": "email", "from": None, "to": "a@x.test"},
            {"trait": "plan", "from": None, "to": "free"},
        ],
        "i2": [{"trait": "plan", "from": "free", "to": "pro"}],  # the email did not change
        "i3": [
            {"trait": "Plan", "from": "pro", "to": "enterprise"},
            {"trait": "seats", "from": None, "to": 5},
        ],
    }


def test_changes_follow_a_visitor_who_signs_in(client: FlaskClient, team: TeamKeys, engine: Engine) -> None:
    send(
        engine,
        team,
        identify("u1", 5, "i-known", plan="pro"),
        {
            "type": "identify",
            "anonymousId": "v1",
            "timestamp": at(1),
            "messageId": "i-anon",
            "traits": {"plan": "trial"},
        },
    )
    assert changes_of(client, team) == {"i-known": [{"trait": "plan", "from": None, "to": "pro"}]}
    claim = {
        "type": "track",
        "userId": "u1",
        "anonymousId": "v1",
        "event": "X",
        "timestamp": at(2),
        "messageId": "t1",
    }
    send(engine, team, claim)
    assert changes_of(client, team) == {
        "i-anon": [{"trait": "plan", "from": None, "to": "trial"}],
        "i-known": [{"trait": "plan", "from": "trial", "to": "pro"}],
    }


def test_server_side_page_calls_show_their_properties_url(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    send(
        engine,
        team,
        {"type": "page", "userId": "u1", "name": "Docs", "timestamp": at(0), "messageId": "p0",
         "properties": {"url": "https://x.test/docs?a=1", "title": "Docs", "path": "/docs",
                        "referrer": "https://search.test/"}},
        {"type": "page", "userId": "u1", "timestamp": at(1), "messageId": "p1",
         "properties": {"url": "https://x.test/props"},
         "context": {"page": {"url": "https://x.test/context", "title": "From context"}}},
        track("u1", "Clicked", 2, properties={"url": "https://x.test/track"}),
    )  # fmt: skip
    contexts = [
        item["context"] for item in get(client, team, "/api/v1/customers/user_id:u1/feed?order=asc")["data"]
    ]
    assert [(c["page_url"], c["page_title"], c["page_path"], c["page_referrer"]) for c in contexts] == [
        ("https://x.test/docs?a=1", "Docs", "/docs", "https://search.test/"),
        ("https://x.test/context", "From context", None, None),  # context.page first
        (None, None, None, None),  # a track's properties are not a page
    ]


def test_me_shows_the_calling_key_whatever_its_scope(client: FlaskClient, team: TeamKeys) -> None:
    for secret, name, scopes in [(team.read, "read", ["read"]), (team.ingest, "ingest", ["ingest"]),
                                 (team.admin, "admin", ["admin", "ingest", "read"])]:  # fmt: skip
        response = client.get("/api/v1/me", headers=team.basic(secret))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert body["team"] == {"id": str(team.id), "name": "test team"}
        assert (body["key"]["name"], sorted(body["key"]["scopes"]), body["key"]["status"]) == (
            name,
            scopes,
            "active",
        )
        assert set(body["key"]) == {"id", "name", "scopes", "status"}
        assert secret not in response.get_data(as_text=True)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}], ids=["no key", "bad key"])
def test_me_without_a_usable_key_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] in ("missing_key", "invalid_key")


def test_me_shows_a_rotated_key_as_expiring_during_its_grace(
    client: FlaskClient, team: TeamKeys, engine: Engine
) -> None:
    from store.apikeys import create_key, rotate_key

    now = datetime.now(UTC)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "zapier", ["read"], now)
        rotate_key(connection, team.id, made.key.id, now, grace=timedelta(hours=1))
    body = client.get("/api/v1/me", headers=team.bearer(made.secret)).get_json()
    assert (body["key"]["id"], body["key"]["name"], body["key"]["status"]) == (
        str(made.key.id),
        "zapier",
        "expiring",
    )
