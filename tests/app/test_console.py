"""The console over Flask's test client: sign-in, cookies, CSRF, CSP, escaping (SPEC §10).

What a browser does with these pages (scripts, dialogs, time zones, "older") is in
tests/app/test_console_browser.py; here are the answers the server gives.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine

from schemas.segment import prepare_event
from store.apikeys import create_key, revoke_key, rotate_key
from store.events import store_events
from tests.conftest import TeamKeys
from workers.fold import fold_until_empty

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, *events: dict[str, Any]) -> None:
    """Store events as ingest would, then fold them."""
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def sign_in_form(client: FlaskClient) -> str:
    page = client.get("/console/sign-in")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert found
    return found.group(1)


def sign_in(client: FlaskClient, secret: str, **extra: str) -> Any:
    token = sign_in_form(client)
    return client.post("/console/sign-in", data={"csrf": token, "key": secret, **extra})


def set_cookie_headers(response: Any, name: str) -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]


def page_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


@pytest.fixture
def agent(client: FlaskClient, team: TeamKeys) -> FlaskClient:
    response = sign_in(client, team.read)
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


# -- sign-in ---------------------------------------------------------------------------


def test_a_read_key_signs_in_with_a_strict_httponly_cookie_that_names_the_key_not_the_secret(
    client: FlaskClient, team: TeamKeys
) -> None:
    response = sign_in(client, team.read)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/"
    (cookie,) = set_cookie_headers(response, "console_session")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= flags
    assert "SameSite=Strict" in cookie and "Path=/console" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    team_id, key_id, _ = value.split(".", 2)
    assert team_id == str(team.id) and key_id.isdigit()
    assert team.read not in cookie and team.read[4:] not in cookie
    home = client.get("/console/")
    assert home.status_code == 200
    assert "Signed in with key “read”" in home.get_data(as_text=True)


def test_a_wrong_key_gets_a_clear_message(client: FlaskClient, team: TeamKeys) -> None:
    response = sign_in(client, "tlk_not-a-key-at-all")
    assert response.status_code == 401
    assert "That key is not recognised" in response.get_data(as_text=True)
    assert set_cookie_headers(response, "console_session") == []
    assert client.get("/console/").status_code == 303  # still signed out


def test_a_key_without_the_read_scope_is_refused(client: FlaskClient, team: TeamKeys) -> None:
    response = sign_in(client, team.ingest)
    assert response.status_code == 401
    assert "no read scope" in response.get_data(as_text=True)


def test_a_revoked_key_cannot_sign_in(client: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    with engine.begin() as connection:
        made = create_key(connection, team.id, "soon gone", ["read"], datetime.now(UTC))
        revoke_key(connection, team.id, made.key.id, datetime.now(UTC))
    response = sign_in(client, made.secret)
    assert response.status_code == 401
    assert "That key was revoked" in response.get_data(as_text=True)


def test_sign_in_without_the_forms_csrf_token_is_refused(client: FlaskClient, team: TeamKeys) -> None:
    sign_in_form(client)  # the cookie is there, the field is not
    response = client.post("/console/sign-in", data={"key": team.read})
    assert response.status_code == 400
    assert "came from another site" in response.get_data(as_text=True)
    assert set_cookie_headers(response, "console_session") == []
    other = client.post("/console/sign-in", data={"key": team.read, "csrf": "guessed"})
    assert other.status_code == 400


def test_sign_in_from_another_site_without_the_cookie_is_refused(app: Any, team: TeamKeys) -> None:
    token = sign_in_form(app.test_client())  # a token, but in another browser
    response = app.test_client().post("/console/sign-in", data={"key": team.read, "csrf": token})
    assert response.status_code == 400


def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_host(
    client: FlaskClient, team: TeamKeys
) -> None:
    asked = client.get("/console/lookup?email=a%40b.test")
    assert asked.status_code == 303
    assert asked.headers["Location"] == "/console/sign-in?next=/console/lookup?email%3Da%2540b.test"
    back = sign_in(client, team.read, next="/console/lookup?email=a%40b.test")
    assert back.headers["Location"] == "/console/lookup?email=a%40b.test"
    client.delete_cookie("console_session", path="/console")
    away = sign_in(client, team.read, next="//evil.test/console")
    assert away.headers["Location"] == "/console/"


def test_sign_out_needs_the_sessions_token_and_ends_the_session(agent: FlaskClient) -> None:
    assert agent.post("/console/sign-out", data={"csrf": "wrong"}).status_code == 400
    assert agent.get("/console/").status_code == 200  # still signed in
    token = page_csrf(agent.get("/console/").get_data(as_text=True))
    out = agent.post("/console/sign-out", data={"csrf": token})
    assert out.status_code == 303
    assert out.headers["Location"] == "/console/sign-in?reason=signed_out"
    (cleared,) = set_cookie_headers(out, "console_session")
    assert "Max-Age=0" in cleared or "expires=Thu, 01 Jan 1970" in cleared
    assert agent.get("/console/").status_code == 303


def test_a_revoked_key_signs_the_agent_out_at_the_next_request(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    with engine.begin() as connection:
        made = create_key(connection, team.id, "agent key", ["read"], datetime.now(UTC))
    assert sign_in(client, made.secret).status_code == 303
    assert client.get("/console/").status_code == 200
    with engine.begin() as connection:
        revoke_key(connection, team.id, made.key.id, datetime.now(UTC))
    response = client.get("/console/")
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/sign-in?reason=revoked"
    assert "your key was revoked" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_a_rotated_key_keeps_only_ingest_and_signs_the_agent_out(
    client: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    with engine.begin() as connection:
        made = create_key(connection, team.id, "agent key", ["read"], datetime.now(UTC))
    assert sign_in(client, made.secret).status_code == 303
    with engine.begin() as connection:
        rotate_key(connection, team.id, made.key.id, datetime.now(UTC))
    response = client.get("/console/")
    assert response.headers["Location"] == "/console/sign-in?reason=rotated"


def test_a_tampered_session_cookie_is_refused(agent: FlaskClient, team: TeamKeys) -> None:
    cookie = agent.get_cookie("console_session", path="/console")
    assert cookie is not None
    team_id, key_id, token = cookie.value.split(".", 2)
    for forged in (
        f"{team_id}.{int(key_id) - 1}.{token}",  # another key of the team, same signature
        f"{team_id}.{key_id}.{token[:-2]}xx",
        "garbage",
    ):
        agent.set_cookie("console_session", forged, path="/console")
        response = agent.get("/console/")
        assert response.status_code == 303, forged
        assert "reason=" in response.headers["Location"]


# -- headers -----------------------------------------------------------------------------


def test_every_console_answer_has_a_strict_csp_and_is_not_cached(agent: FlaskClient) -> None:
    for path in ("/console/", "/console/sign-in", "/console/customers/1", "/console/static/console.js"):
        response = agent.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        response.close()  # the static file's handle
    assert agent.get("/console/").headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_and_load_nothing_from_another_host(agent: FlaskClient) -> None:
    html = agent.get("/console/").get_data(as_text=True)
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
    assert scripts == [""]  # one, ours, with src
    assert re.findall(r'(?:src|href)="(https?:)?//', html) == []
    assert not re.search(r"<[^>]+\son\w+=", html)


def test_a_link_from_another_site_reloads_itself_to_carry_the_strict_cookie(agent: FlaskClient) -> None:
    agent.delete_cookie("console_session", path="/console")  # as a cross-site navigation sends it
    headers = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    response = agent.get("/console/lookup?email=a%40b.test", headers=headers)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'src="/console/static/bounce.js"' in html
    assert agent.get("/console/lookup?email=a%40b.test").status_code == 303  # same-site: to sign-in


# -- pages -----------------------------------------------------------------------------


@pytest.fixture
def journey(engine: Engine, team: TeamKeys) -> TeamKeys:
    send(
        engine,
        team,
        {"type": "page", "anonymousId": "anon-1", "name": "Pricing", "timestamp": at(0), "messageId": "p0",
         "context": {"page": {"url": "https://shop.test/pricing", "title": "Pricing"}}},
        {"type": "identify", "userId": "u-ada", "anonymousId": "anon-1", "timestamp": at(1),
         "messageId": "i1", "traits": {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}},
        {"type": "track", "userId": "u-ada", "event": "Order Completed", "timestamp": at(2),
         "messageId": "t1", "properties": {"total": 42, "items": ["book"]}},
        {"type": "group", "userId": "u-ada", "groupId": "g-acme", "timestamp": at(3), "messageId": "g1",
         "traits": {"name": "Acme", "plan": "enterprise"}},
    )  # fmt: skip
    return team


def test_the_customer_page_shows_profile_traits_groups_and_the_journey(
    agent: FlaskClient, journey: TeamKeys
) -> None:
    found = agent.get("/console/lookup?email=ADA@example.com")
    assert found.status_code == 303
    page = agent.get(found.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<h1 id="customer-name">Ada Lovelace</h1>' in html
    assert '<code class="id">u-ada</code>' in html and '<code class="id">anon-1</code>' in html
    assert re.search(r'<th scope="row">plan</th><td><span class="value">pro</span></td><td><time '
                     r'datetime="2024-03-01T12:01:00Z"', html)  # fmt: skip
    assert '<a class="group-link" href="/console/groups/g-acme">Acme</a>' in html
    lines = re.findall(r'<span class="line">(.*?)</span>', html)
    assert lines == [
        "Joined group Acme",
        "Order Completed",
        "Identified as u-ada; traits updated: email, name, plan",
        "Viewed page Pricing",
    ]
    assert '<a href="https://shop.test/pricing" rel="noopener noreferrer nofollow"' in html
    assert 'class="event type-page anonymous"' in html
    assert "This is the start of the journey." in html


def test_lookup_that_finds_nobody_says_what_was_looked_up(agent: FlaskClient, journey: TeamKeys) -> None:
    response = agent.get("/console/lookup?user_id=u-nobody")
    assert response.status_code == 404
    assert "Nothing in this team matches userId u-nobody." in response.get_data(as_text=True)
    bad = agent.get("/console/lookup?email=a%40b.test&user_id=u1")
    assert bad.status_code == 400
    assert "exactly one of email=, user_id= or anonymous_id=" in bad.get_data(as_text=True)


def test_a_bad_older_cursor_is_a_page_that_says_so(agent: FlaskClient, journey: TeamKeys) -> None:
    customer = agent.get("/console/lookup?user_id=u-ada").headers["Location"]
    response = agent.get(customer + "?cursor=not-a-cursor")
    assert response.status_code == 400
    assert "Open the customer again from the newest events" in response.get_data(as_text=True)


def test_a_merged_away_id_opens_the_survivor(agent: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    send(engine, team, {"type": "page", "anonymousId": "anon-m", "name": "Home", "timestamp": at(0),
                        "messageId": "m0"})  # fmt: skip
    anonymous = agent.get("/console/lookup?anonymous_id=anon-m").headers["Location"]
    send(engine, team, {"type": "identify", "userId": "u-m", "anonymousId": "anon-m", "timestamp": at(1),
                        "messageId": "m1", "traits": {"name": "Mer Ged"}})  # fmt: skip
    survivor = agent.get("/console/lookup?user_id=u-m").headers["Location"]
    assert agent.get("/console/lookup?anonymous_id=anon-m").headers["Location"] == survivor
    if anonymous != survivor:
        moved = agent.get(anonymous)
        assert moved.status_code == 303 and moved.headers["Location"] == survivor


def test_another_teams_customer_and_group_are_not_found(
    agent: FlaskClient, engine: Engine, other_team: TeamKeys
) -> None:
    send(engine, other_team, {"type": "group", "userId": "u-other", "groupId": "g-other", "timestamp": at(0),
                              "messageId": "o1", "traits": {"name": "Other"}})  # fmt: skip
    other = sign_in(agent.application.test_client(), other_team.read)
    assert other.status_code == 303
    assert agent.get("/console/lookup?user_id=u-other").status_code == 404
    assert agent.get("/console/groups/g-other").status_code == 404


def test_every_event_value_is_escaped(agent: FlaskClient, engine: Engine, team: TeamKeys) -> None:
    send(
        engine,
        team,
        {"type": "identify", "userId": "u-evil", "timestamp": at(0), "messageId": "h1",
         "traits": {"name": HOSTILE, "website": "javascript:alert(1)"}},
        {"type": "page", "userId": "u-evil", "name": HOSTILE, "timestamp": at(1), "messageId": "h2",
         "properties": {"url": "javascript:alert(document.cookie)", "html": "<b onmouseover=alert(1)>x</b>"},
         "context": {"page": {"title": "</title><script>alert(1)</script>"}}},
        {"type": "track", "userId": "u-evil", "event": HOSTILE, "timestamp": at(2), "messageId": "h3"},
    )  # fmt: skip
    customer = agent.get("/console/lookup?user_id=u-evil").headers["Location"]
    html = agent.get(customer).get_data(as_text=True)
    assert "<script>window" not in html and "<img src=x" not in html and "<b onmouseover" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript:' not in html
    assert "javascript:alert(document.cookie)" in html  # shown as text
    assert not re.search(r"<[^>]+\son\w+=", html)


def test_search_pages_through_every_match_most_recently_seen_first(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, *[
        {"type": "identify", "userId": f"pager-{n:02}", "timestamp": at(n), "messageId": f"pg{n}",
         "traits": {"name": f"Pager {n:02}"}}
        for n in range(30)
    ])  # fmt: skip
    shown: list[str] = []
    url: str | None = "/console/?q=PAGER-"
    pages = 0
    while url:
        html = agent.get(url).get_data(as_text=True)
        shown += re.findall(r'class="customer-link" href="[^"]+">([^<]+)</a>', html)
        more = re.search(r'id="more-results" href="([^"]+)"', html)
        url = more.group(1).replace("&amp;", "&") if more else None
        pages += 1
    assert pages == 2
    assert shown == [f"Pager {n:02}" for n in reversed(range(30))]


def test_a_wide_customers_page_is_bounded_and_says_what_it_left_out(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    # Issue 20: six identifies of 1,000 traits each made a page of ~750 KB; the profile
    # and the journey now show their caps and say so.
    send(
        engine,
        team,
        *(
            {"type": "identify", "userId": "wide", "timestamp": at(n), "messageId": f"w{n}",
             "traits": {f"trait_{k:04}": f"value {n}-{k}" for k in range(1_000)}}
            for n in range(6)
        ),
    )  # fmt: skip
    found = agent.get("/console/lookup?user_id=wide")
    assert found.status_code == 303
    page = agent.get(found.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert len(page.get_data()) < 250_000, len(page.get_data())
    assert 'id="traits-cut"' in html
    assert html.count('<th scope="row">trait_') == 200
    assert html.count("Shortened here (traits, changes)") == 6
