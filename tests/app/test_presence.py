"""Presence: "active now" and where, in the API's profile and on the console's home (issue 24).

The rule is one (`schemas.api.ACTIVE_WITHIN`, applied in SQL by store/answers/presence.py):
an event within five minutes of now, either side; the place is the newest page or screen
of the current visit. Events are dated from the test's clock, so "now" is real here; the
edges of the rule are held with an explicit `now` (store.presence.read_active_customers).
The home's list, live, is in a browser in tests/app/test_console_home_browser.py.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from app.console import data, views
from app.console import live as console_live
from app.read_api.live import END, NEWS, Listener, TeamSubscription
from app.read_api.stream import HEARTBEAT_SECONDS
from schemas.api import ACTIVE_WITHIN
from store.answers.profile import ProfileSchema
from store.apikeys import create_key, revoke_key
from store.presence import read_active_customers
from tests.app.test_console import sign_in, without_bdi
from tests.app.test_customers import customer_of, get, send
from tests.app.test_stream import Reader, wait_for
from tests.conftest import TeamKeys
from tests.store.reference import load_profile


def ago(**delta: float) -> str:
    """An event time this long before now (ahead of now, when negative)."""
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def page(user: str, name: str, when: str, message_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "page", "userId": user, "name": name, "timestamp": when, "messageId": message_id, **extra}


def track(user: str, name: str, when: str, message_id: str) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": name, "timestamp": when, "messageId": message_id}


@pytest.fixture
def agent(client: FlaskClient, team: TeamKeys) -> FlaskClient:
    assert sign_in(client, team.read).status_code == 303
    return client


# -- the API's profile ---------------------------------------------------------------


def test_the_profile_says_active_now_and_on_which_page(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    came = ago(minutes=2)
    send(
        engine,
        team,
        page("u-here", "Checkout", came, "p1",
             context={"page": {"url": "https://shop.test/checkout?step=2", "path": "/checkout",
                               "title": "Checkout | Shop"}}),
        track("u-here", "Coupon Applied", ago(seconds=30), "t1"),
    )  # fmt: skip
    customer = customer_of(client, team, "u-here")
    profile = get(client, team, f"/api/v1/customers/{customer}")
    assert profile["presence"] == {
        "active_now": True,
        "last_seen": profile["last_seen"],
        "place": {
            "type": "page",
            "name": "Checkout",
            "title": "Checkout | Shop",
            "url": "https://shop.test/checkout?step=2",
            "path": "/checkout",
            "since": came,
        },
    }
    assert get(client, team, "/api/v1/customers/lookup?user_id=u-here")["presence"]["active_now"] is True
    # The oracle (plain queries) agrees, key for key.
    with engine.connect() as connection:
        assert profile == ProfileSchema().dump(load_profile(connection, team.id, int(customer)))


def test_a_screen_is_a_place_too_and_a_page_of_an_earlier_visit_is_not(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(
        engine,
        team,
        {"type": "screen", "userId": "u-app", "name": "Cart", "timestamp": ago(minutes=1), "messageId": "s1"},
        page("u-back", "Pricing", ago(minutes=45), "p2"),  # 44 minutes before their newest event
        track("u-back", "Opened App", ago(minutes=1), "t2"),
    )  # fmt: skip
    app_user = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u-app')}")["presence"]
    assert app_user["active_now"] is True
    assert (app_user["place"]["type"], app_user["place"]["name"]) == ("screen", "Cart")
    back = get(client, team, f"/api/v1/customers/{customer_of(client, team, 'u-back')}")["presence"]
    assert back["active_now"] is True and back["place"] is None


def test_a_customer_seen_an_hour_ago_or_dated_ahead_is_not_active(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(
        engine,
        team,
        page("u-gone", "Home", ago(hours=1), "p3"),
        page("u-ahead", "Home", ago(hours=-2), "p4"),  # a device clock two hours fast
    )
    for user in ("u-gone", "u-ahead"):
        profile = get(client, team, f"/api/v1/customers/{customer_of(client, team, user)}")
        assert profile["presence"] == {"active_now": False, "last_seen": profile["last_seen"], "place": None}


def test_the_rule_holds_to_the_microsecond_at_its_edges(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, track("u-edge", "Clicked", ago(hours=3), "t3"))
    customer = customer_of(client, team, "u-edge")
    seen = datetime.fromisoformat(get(client, team, f"/api/v1/customers/{customer}")["last_seen"])
    tick = timedelta(microseconds=1)
    # (now, active): within ACTIVE_WITHIN of the newest event, either side, ends excluded.
    for now, active in (
        (seen - ACTIVE_WITHIN, False),
        (seen - ACTIVE_WITHIN + tick, True),
        (seen, True),
        (seen + ACTIVE_WITHIN - tick, True),
        (seen + ACTIVE_WITHIN, False),
    ):
        with engine.connect() as connection:
            found = read_active_customers(connection, team.id, now, limit=10)
        listed = [item["id"] for item in json.loads(found.items_json)] == [customer]
        assert listed == active, now - seen
        assert found.active == (1 if listed else 0)


def test_the_openapi_document_shows_presence_on_the_profile(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    presence = schemas["Profile"]["properties"]["presence"]
    assert presence["allOf"] == [{"$ref": "#/components/schemas/Presence"}]
    assert "Active now" in presence["description"]
    assert set(schemas["Presence"]["required"]) == {"active_now", "last_seen", "place"}
    assert "within 5 minutes" in schemas["Presence"]["properties"]["active_now"]["description"]
    assert set(schemas["Place"]["properties"]) == {"type", "name", "title", "url", "path", "since"}


# -- the console's home --------------------------------------------------------------


def active_rows(html: str) -> list[str]:
    """The home's "Active now" list as text, one line a customer."""
    section = re.search(r'<section class="active-customers".*?</section>', html, re.S)
    assert section, html[:3000]
    rows = re.findall(r'<li class="active-customer"[^>]*>(.*?)</li>', section.group(0), re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", without_bdi(row)).split()) for row in rows]


def test_the_home_lists_customers_active_now_newest_first_with_where_and_how_long_ago(
    agent: FlaskClient, engine: Engine, team: TeamKeys, other_team: TeamKeys
) -> None:
    send(
        engine,
        team,
        {"type": "identify", "userId": "u-ann", "timestamp": ago(minutes=3), "messageId": "i1",
         "traits": {"name": "Ann Active", "email": "ann@example.com"}},
        page("u-ann", "Checkout", ago(minutes=3), "p5"),
        page("u-bo", "Pricing", ago(seconds=20), "p6", context={"page": {"path": "/pricing"}}),
        page("u-old", "Home", ago(minutes=6), "p7"),
    )  # fmt: skip
    send(engine, other_team, page("u-elsewhere", "Home", ago(seconds=5), "p8"))
    home = agent.get("/console/")
    assert home.status_code == 200
    assert active_rows(home.get_data(as_text=True)) == [
        "u-bo on Pricing just now",
        "Ann Active ann@example.com on Checkout 3 minutes ago",
    ]
    html = home.get_data(as_text=True)
    assert 'data-live="/console/live"' in html and 'data-fragment="/console/active-now"' in html
    # The list alone, for the page's script, is the same list.
    fragment = agent.get("/console/active-now")
    assert fragment.status_code == 200 and "<html" not in fragment.get_data(as_text=True)
    assert active_rows(fragment.get_data(as_text=True)) == active_rows(html)
    # A search (or a later page) is about other customers: no "Active now" there.
    assert "active-customers" not in agent.get("/console/?q=u-").get_data(as_text=True)


def test_the_home_is_bounded_and_says_how_many_more(
    agent: FlaskClient, engine: Engine, team: TeamKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "ACTIVE_SHOWN", 2)
    send(engine, team, *(page(f"u-{n}", "Home", ago(seconds=10 + n), f"p-many-{n}") for n in range(5)))
    html = agent.get("/console/").get_data(as_text=True)
    assert [row.split()[0] for row in active_rows(html)] == ["u-0", "u-1"]
    assert re.search(r'<p class="more" id="active-more">and 3 more</p>', html)
    # Past what is counted, the count says so.
    monkeypatch.setattr(data, "ACTIVE_COUNTED", 5)
    html = agent.get("/console/").get_data(as_text=True)
    assert re.search(r'<p class="more" id="active-more">and at least 3 more</p>', html)


def test_nobody_active_says_so(agent: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    send(engine, team, page("u-yesterday", "Home", ago(days=1), "p9"))
    html = agent.get("/console/").get_data(as_text=True)
    assert active_rows(html) == []
    assert "No customer is active right now." in html


def test_the_homes_list_and_stream_send_a_signed_out_script_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/console/active-now")
    assert response.status_code == 401
    assert response.headers["X-Console-Sign-In"].startswith("/console/sign-in")
    # The stream's refusal is an event (an EventSource gives up on anything else): `end`,
    # with where to sign in.
    stream = client.get("/console/live")
    assert (stream.status_code, stream.mimetype) == (200, "text/event-stream")
    body = stream.get_data(as_text=True)
    assert "event: end" in body and '"sign_in": "/console/sign-in' in body


# -- the home, live ------------------------------------------------------------------


def open_home_stream(agent: FlaskClient) -> Reader:
    response = agent.get("/console/live", buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return Reader(response).start()


def test_the_home_stream_says_news_when_a_customer_of_the_team_has_new_events(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    reader = open_home_stream(agent)
    send(engine, team, page("u-new", "Welcome", ago(seconds=1), "p10"))
    wait_for("news", lambda: [e for e in reader.events if e.name == "news"])


def test_a_notice_is_news_to_its_teams_subscriptions_only(
    app: Flask, team: TeamKeys, other_team: TeamKeys
) -> None:
    listener: Listener = app.extensions["timeline_live"].get()
    ours, theirs = listener.subscribe_team(team.id), listener.subscribe_team(other_team.id)
    try:
        listener.deliver(f"{team.id} 1:2 1:3")
        assert ours.notices.get(timeout=5) == NEWS
        assert theirs.notices.empty()
    finally:
        listener.unsubscribe_team(ours)
        listener.unsubscribe_team(theirs)


class _Listener:
    def unsubscribe_team(self, subscription: TeamSubscription) -> None:
        subscription.notices.put(END)


def test_news_that_came_meanwhile_is_told_once_and_never_faster_than_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(console_live, "time", SimpleNamespace(monotonic=time.monotonic, sleep=waits.append))
    subscription = TeamSubscription(1)
    stream = console_live._news(_Listener(), subscription, lambda: None, HEARTBEAT_SECONDS)  # type: ignore[arg-type]
    assert next(stream).startswith("retry:")
    for _ in range(50):  # a busy team: fifty batches folded at once
        subscription.notices.put(NEWS)
    assert next(stream) == "event: news\ndata: {}\n\n"
    assert waits == []  # the first news at once
    assert subscription.notices.empty()  # the other 49 were the same news
    subscription.notices.put(NEWS)
    assert next(stream) == "event: news\ndata: {}\n\n"
    assert len(waits) == 1 and 0 < waits[0] <= console_live.NEWS_SECONDS  # held back to a second apart
    subscription.notices.put(END)
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.usefixtures("quick_heartbeat")
def test_a_key_revoked_ends_the_home_stream_saying_why(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    with engine.begin() as connection:
        made = create_key(connection, team.id, "agent key", ["read"], datetime.now(UTC))
    assert sign_in(client, made.secret).status_code == 303
    reader = open_home_stream(client)
    with engine.begin() as connection:
        revoke_key(connection, team.id, made.key.id, datetime.now(UTC))
    ended = wait_for("the end event", lambda: [e for e in reader.events if e.name == "end"])
    assert json.loads(ended[0].data)["code"] == "signed_out"
    assert reader.ended.wait(10)
