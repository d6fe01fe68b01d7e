"""`GET /api/v1/customers/{id}/visits`: visits split at 30-minute gaps, newest first, paged
without splitting or repeating a visit; what each came with; read scope; one team."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine

from schemas.segment import prepare_event
from store.events import store_events
from tests.conftest import TeamKeys
from workers.fold import fold_until_empty

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
DESKTOP = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, events: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def journey() -> list[dict[str, Any]]:
    campaign = {"name": "spring_sale", "source": "newsletter", "medium": "email"}
    return [
        # Visit 1: 09:00-09:10, from a campaign, on a laptop.
        {"type": "page", "anonymousId": "anon-v", "name": "Home", "timestamp": at(0), "messageId": "v1",
         "context": {"userAgent": DESKTOP, "campaign": campaign,
                     "page": {"url": "https://shop.test/?utm_campaign=spring_sale", "title": "Home",
                              "referrer": "https://mail.example/", "path": "/"}}},
        {"type": "identify", "userId": "u-v", "anonymousId": "anon-v", "timestamp": at(10), "messageId": "v2",
         "traits": {"email": "v@example.com"}, "context": {"userAgent": DESKTOP}},
        # Visit 2 (40 minutes later): 09:50-10:15; a 25-minute gap inside does not split it.
        {"type": "page", "userId": "u-v", "name": "Pricing", "timestamp": at(50), "messageId": "v3",
         "context": {"userAgent": DESKTOP, "page": {"url": "https://shop.test/pricing", "title": "Pricing"}}},
        {"type": "track", "userId": "u-v", "event": "Order Completed", "timestamp": at(75), "messageId": "v4",
         "context": {"userAgent": DESKTOP}},
        # Visit 3 (two hours on), on a phone: a screen first.
        {"type": "screen", "userId": "u-v", "name": "Orders", "timestamp": at(200), "messageId": "v5",
         "context": {"userAgent": IPHONE}},
        {"type": "track", "userId": "u-v", "event": "Help Requested", "timestamp": at(203), "messageId": "v6",
         "context": {"userAgent": IPHONE}},
    ]  # fmt: skip


def visits(client: FlaskClient, secret: str, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {secret}"})


def test_visits_are_split_at_thirty_minute_gaps_newest_first_with_what_they_came_with(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, journey())
    answer = visits(client, team.read, "/api/v1/customers/user_id:u-v/visits")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["next_cursor"] is None
    phone, second, first = body["data"]
    assert (phone["start"], phone["end"], phone["duration_seconds"]) == (
        "2024-05-01T12:20:00+00:00",
        "2024-05-01T12:23:00+00:00",
        180,
    )
    assert phone["events"] == 2 and phone["pages"] == 1
    assert phone["entry_page"]["type"] == "screen" and phone["entry_page"]["name"] == "Orders"
    assert phone["device"] == {"browser": "Mobile Safari 17", "os": "iOS 17", "device": "iPhone"}
    assert (second["events"], second["pages"], second["duration_seconds"]) == (2, 1, 25 * 60)
    assert second["entry_page"]["url"] == "https://shop.test/pricing"
    assert second["campaign"] is None and second["referrer"] is None
    assert first["referrer"] == "https://mail.example/"
    assert first["campaign"] == {"name": "spring_sale", "source": "newsletter", "medium": "email"}
    assert first["entry_page"] == {"type": "page", "name": "Home", "url": "https://shop.test/?utm_campaign=spring_sale",
                                   "title": "Home", "path": "/"}  # fmt: skip
    assert first["device"]["browser"] == "Chrome 124" and first["device"]["os"].startswith("Mac OS X")
    assert first["user_agent"] == DESKTOP


def test_paging_by_one_visit_gives_the_same_visits_none_split_or_repeated(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, journey())
    whole = visits(client, team.read, "/api/v1/customers/user_id:u-v/visits").get_json()["data"]
    paged: list[Any] = []
    path: str | None = "/api/v1/customers/user_id:u-v/visits?limit=1"
    while path:
        page = visits(client, team.read, path).get_json()
        assert len(page["data"]) == 1
        paged += page["data"]
        cursor = page["next_cursor"]
        path = f"/api/v1/customers/user_id:u-v/visits?limit=1&cursor={cursor}" if cursor else None
    assert paged == whole


def test_visits_need_the_read_scope_and_stay_in_the_team(
    client: FlaskClient, engine: Engine, team: TeamKeys, other_team: TeamKeys
) -> None:
    send(engine, team, journey())
    assert visits(client, team.ingest, "/api/v1/customers/user_id:u-v/visits").status_code == 403
    assert visits(client, other_team.read, "/api/v1/customers/user_id:u-v/visits").status_code == 404
    assert visits(client, team.read, "/api/v1/customers/user_id:u-v/visits?cursor=nope").status_code == 400
    assert visits(client, team.read, "/api/v1/customers/user_id:u-v/visits?limit=101").status_code == 400


def test_visits_are_in_the_openapi_document_with_the_read_key(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/customers/{customer_id}/visits"]["get"]
    assert operation["operationId"] == "getCustomerVisits"
    assert "VisitPage" in str(operation["responses"]["200"])


def test_a_visit_longer_than_the_scan_budget_is_answered_in_parts_that_say_so(
    engine: Engine, team: TeamKeys
) -> None:
    from app.read_api.visits import read_visits
    from store.customers import lookup_customer

    long_visit = [
        {"type": "track", "userId": "u-long", "event": "Tick", "timestamp": at(100 + n), "messageId": f"t{n}"}
        for n in range(30)
    ]
    earlier = [
        {"type": "page", "userId": "u-long", "name": "Home", "timestamp": at(n), "messageId": f"e{n}"}
        for n in range(2)
    ]
    send(engine, team, long_visit + earlier)
    with engine.connect() as connection:
        customer = lookup_customer(connection, team.id, "user", "u-long")
        assert customer is not None
        pages = []
        after = None
        while True:
            found, after = read_visits(
                connection, team.id, customer, limit=5, after=after, budget=10, chunk=5
            )
            pages.append(found)
            if after is None:
                break
    parts = [visit for page in pages for visit in page]
    # Three parts of the long visit (10 events each, newest first), then the earlier visit.
    assert [visit["events"] for visit in parts] == [10, 10, 10, 2]
    assert [visit["continued_from_previous_page"] for visit in parts] == [False, True, True, False]
    assert [visit["continues_on_next_page"] for visit in parts] == [True, True, True, False]
    assert parts[2]["start"] == T0 + timedelta(minutes=100)
    assert parts[3]["entry_page"]["name"] == "Home"
