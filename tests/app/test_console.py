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


def without_bdi(html: str) -> str:
    """A page without its `<bdi>` tags (each value from an event is in one), to read its text."""
    return re.sub(r"</?bdi>", "", html)


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
    assert "Signed in with key “<bdi>read</bdi>”" in home.get_data(as_text=True)


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
    html = without_bdi(page.get_data(as_text=True))
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
    assert "Nothing in this team matches userId u-nobody." in without_bdi(response.get_data(as_text=True))
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
        html = without_bdi(agent.get(url).get_data(as_text=True))
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
    assert html.count('<th scope="row"><bdi>trait_') == 200
    assert html.count("Shortened here (traits, changes)") == 6


# -- what the red-team pass found (issue 24) ------------------------------------------

RLO = "\u202e"


def stylesheet(client: FlaskClient) -> str:
    with client.get("/console/static/console.css") as response:
        return response.get_data(as_text=True)


def test_every_value_from_an_event_is_direction_isolated(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    """An RLO in a value cannot reverse the console's own text after it: each value is in a
    `<bdi>` (or an element the stylesheet isolates), and the <title>'s between FSI and PDI."""
    send(
        engine,
        team,
        {"type": "identify", "userId": f"u-{RLO}bidi", "anonymousId": f"a-{RLO}bidi", "timestamp": at(0),
         "messageId": "b1", "traits": {"name": f"Refund {RLO}00.001$ :tnuoma", f"k{RLO}ey": f"v{RLO}alue",
                                        "email": f"{RLO}bidi@example.com"}},
        {"type": "page", "userId": f"u-{RLO}bidi", "name": f"P{RLO}ricing", "timestamp": at(1),
         "messageId": "b2",
         "context": {"page": {"title": f"T{RLO}itle"}, "userAgent": f"UA{RLO}x", "ip": "203.0.113.9"}},
    )  # fmt: skip
    customer = agent.get(f"/console/lookup?user_id=u-{RLO}bidi").headers["Location"]
    html = agent.get(customer).get_data(as_text=True)
    assert f'<h1 id="customer-name"><bdi>Refund {RLO}00.001$ :tnuoma</bdi></h1>' in html
    assert f"<title>\u2068Refund {RLO}00.001$ :tnuoma\u2069 · Customer console</title>" in html
    assert f'<th scope="row"><bdi>k{RLO}ey</bdi></th><td><span class="value">v{RLO}alue</span>' in html
    assert f"<bdi>{RLO}bidi@example.com</bdi>" in html
    assert f"Identified as <bdi>u-{RLO}bidi</bdi>; <bdi>" in html
    assert f"<bdi>Viewed page P{RLO}ricing</bdi> · <bdi>T{RLO}itle</bdi>" in html
    assert f'<span class="who"><bdi>u-{RLO}bidi</bdi></span>' in html
    assert f"<bdi>UA{RLO}x</bdi>" in html
    # Every occurrence of the RLO is inside an isolating element: outside <bdi>, <code>,
    # <span class="value"> and <title>, none is left.
    outside = re.sub(r"<(bdi|code|title)\b[^>]*>.*?</\1>", "", html, flags=re.S)
    outside = re.sub(r'<span class="value">.*?</span>', "", outside, flags=re.S)
    outside = re.sub(r"<input [^>]*>", "", outside)  # the search box's value
    outside = re.sub(r'(href|datetime|title|data-\w+)="[^"]*"', "", outside)  # attributes are no text
    assert RLO not in outside
    css = stylesheet(agent)
    assert re.search(r"bdi, \.value, code, \.line, \.who, dd a, td a \{ unicode-bidi: isolate; \}", css)
    search = agent.get(f"/console/?q={RLO}x").get_data(as_text=True)
    assert f'Customers starting with “<bdi id="query">{RLO}x</bdi>”' in search


def test_long_values_wrap_instead_of_widening_the_page(agent: FlaskClient) -> None:
    """The rule the browser test measures: cells and values break anywhere."""
    css = stylesheet(agent)
    assert "td, th, dd, .value, code, .line, .who, h1, dd a, td a { overflow-wrap: anywhere; }" in css


@pytest.mark.parametrize(
    ("group_id", "href"),
    [
        ("../../api/v1/keys", "/console/groups/%2E%2E%2F%2E%2E%2Fapi%2Fv1%2Fkeys"),
        ("a//b", "/console/groups/a%2F%2Fb"),
        ("..", "/console/groups/?id=.."),
        (".", "/console/groups/?id=."),
        ("acme corp/emea?x=1#y", "/console/groups/acme%20corp%2Femea%3Fx%3D1%23y"),
    ],
)
def test_a_group_link_never_leaves_the_console_whatever_the_group_id(
    agent: FlaskClient, engine: Engine, team: TeamKeys, group_id: str, href: str
) -> None:
    send(engine, team, {"type": "group", "userId": "u-grp", "groupId": group_id, "timestamp": at(0),
                        "messageId": "g1", "traits": {"name": "Odd Group"}})  # fmt: skip
    customer = agent.get("/console/lookup?user_id=u-grp").headers["Location"]
    html = agent.get(customer).get_data(as_text=True)
    links = re.findall(r'class="group-link" href="([^"]+)"', html)
    assert links and set(links) == {href.replace("&", "&amp;")}
    # What a browser resolves the link to stays under /console/groups/.
    from urllib.parse import urljoin

    assert urljoin("http://127.0.0.1" + customer, href).startswith("http://127.0.0.1/console/groups/")
    page = agent.get(href)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    assert "Odd Group" in page.get_data(as_text=True)


def test_sign_out_ends_the_session_on_the_server_a_captured_cookie_opens_nothing(
    app: Any, agent: FlaskClient, redis: Any
) -> None:
    cookie = agent.get_cookie("console_session", path="/console")
    assert cookie is not None
    captured = cookie.value
    token = page_csrf(agent.get("/console/").get_data(as_text=True))
    assert agent.post("/console/sign-out", data={"csrf": token}).status_code == 303
    thief = app.test_client()
    thief.set_cookie("console_session", captured, path="/console")
    stolen = thief.get("/console/")
    assert stolen.status_code == 303
    assert stolen.headers["Location"] == "/console/sign-in?reason=ended"
    assert "Your session has ended" in thief.get(stolen.headers["Location"]).get_data(as_text=True)


def test_the_session_is_held_in_redis_for_its_twelve_hours(app: Any, agent: FlaskClient, redis: Any) -> None:
    prefix = app.config["CONSOLE_REDIS_PREFIX"]
    held = [name for name in redis.scan_iter(f"{prefix}session:*")]
    assert held
    assert 0 < max(redis.ttl(name) for name in held) <= 12 * 3600


def test_sign_in_failures_are_throttled_per_address_and_logged_without_the_key(
    app: Any, team: TeamKeys, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    limit = app.config["CONSOLE_SIGN_IN_FAILURES"]
    wrong = [f"tlk_wrong{n:04}-0123456789abcdef" for n in range(limit)]
    with caplog.at_level("WARNING", logger="app.console.throttle"):
        for secret in wrong:
            assert sign_in(client, secret).status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "app.console.throttle"]
    assert len(lines) == limit
    assert all("address=198.51.100.7" in line and "reason=unknown" in line for line in lines)
    assert not any(secret in line or secret[12:] in line for line in lines for secret in wrong)
    # Over the limit: refused before any lookup, even the right key, with Retry-After.
    refused = sign_in(client, team.read)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= app.config["CONSOLE_SIGN_IN_WINDOW"]
    assert "Too many sign-in attempts" in refused.get_data(as_text=True)
    # Another address is not held back.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.8"
    assert sign_in(other, team.read).status_code == 303


def test_sign_in_failures_are_throttled_per_key_prefix_across_addresses(app: Any, team: TeamKeys) -> None:
    limit = app.config["CONSOLE_SIGN_IN_FAILURES"]
    guesses = [team.read[:12] + f"guess{n:04}" for n in range(limit)]
    for n, secret in enumerate(guesses):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"192.0.2.{n + 1}"
        assert sign_in(client, secret).status_code == 401
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.200"
    assert sign_in(client, team.read[:12] + "one-more").status_code == 429


@pytest.mark.parametrize("path", ["/console", "/", "/console/groups/a//b"])
def test_no_redirect_names_the_requests_host(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Host": "evil.test"})
    location = response.headers.get("Location", "")
    assert "evil.test" not in location
    if response.status_code in (301, 302, 303, 307, 308):
        assert location.startswith("/") and not location.startswith("//")


def test_console_without_its_slash_goes_to_the_console_by_a_path(client: FlaskClient) -> None:
    response = client.get("/console", headers={"Host": "evil.test"})
    assert response.status_code == 308
    assert response.headers["Location"] == "/console/"


def test_the_sign_in_cookie_carries_the_host_prefix(client: FlaskClient, team: TeamKeys) -> None:
    page = client.get("/console/sign-in")  # the test client's host: localhost
    (cookie,) = set_cookie_headers(page, "__Host-console_sign_in")
    parts = [part.strip() for part in cookie.split(";")]
    assert "Secure" in parts and "Path=/" in parts and "HttpOnly" in parts and "SameSite=Strict" in parts
    assert not any(part.lower().startswith("domain") for part in parts)
    assert set_cookie_headers(page, "console_sign_in") == []
    signed = sign_in(client, team.read)
    assert signed.status_code == 303
    (dropped,) = set_cookie_headers(signed, "__Host-console_sign_in")
    assert "Max-Age=0" in dropped or "expires=Thu, 01 Jan 1970" in dropped
    assert "Secure" in dropped and "Path=/" in dropped


def test_over_plain_http_to_another_host_the_sign_in_cookie_has_no_prefix(app: Any, team: TeamKeys) -> None:
    """A browser refuses a Secure cookie from http://console.internal: the unprefixed one."""
    client = app.test_client()
    page = client.get("/console/sign-in", base_url="http://console.internal")
    assert set_cookie_headers(page, "__Host-console_sign_in") == []
    (cookie,) = set_cookie_headers(page, "console_sign_in")
    assert "Secure" not in cookie and "Path=/console" in cookie
    secure = app.test_client().get("/console/sign-in", base_url="https://console.internal")
    assert set_cookie_headers(secure, "__Host-console_sign_in")


def test_the_front_door_leads_to_the_console_and_names_the_api_docs(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    assert response.headers["Link"] == '</api/v1/openapi.json>; rel="service-desc"'
    assert "/api/v1/openapi.json" in response.get_data(as_text=True)
    assert client.get("/api/v1/openapi.json").status_code == 200


# -- presence ------------------------------------------------------------------------


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def test_a_customer_active_now_shows_so_with_the_page_they_are_on(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team,
         {"type": "page", "userId": "u-live", "name": "Pricing", "timestamp": _ago(minutes=3),
          "messageId": "l1", "context": {"page": {"title": "Pricing | Shop", "url": "https://shop.test/pricing"}}},
         {"type": "track", "userId": "u-live", "event": "Plan Compared", "timestamp": _ago(minutes=2),
          "messageId": "l2"})  # fmt: skip
    customer = agent.get("/console/lookup?user_id=u-live").headers["Location"]
    html = agent.get(customer).get_data(as_text=True)
    assert (
        '<span class="active-now" id="active-now">Active now</span> on <bdi id="current-place">Pricing</bdi>'
        in html
    )
    # Filtered to tracks, the page is not among the items shown: it is read apart.
    filtered = agent.get(customer + "?type=track").get_data(as_text=True)
    assert '<bdi id="current-place">Pricing</bdi>' in filtered


def test_a_customer_seen_hours_ago_shows_when_relative_with_the_instant_on_hover(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    seen = _ago(hours=3, minutes=5)
    send(engine, team, {"type": "track", "userId": "u-gone", "event": "Logged Out", "timestamp": seen,
                        "messageId": "g1"})  # fmt: skip
    customer = agent.get("/console/lookup?user_id=u-gone").headers["Location"]
    html = agent.get(customer).get_data(as_text=True)
    found = re.search(
        r'Last seen <time datetime="([^"]+)" title="([^"]+)" data-relative="1" '
        r'id="last-seen-ago">([^<]+)</time>',
        html,
    )
    assert found, html[html.find("presence") - 200 : html.find("presence") + 400]
    assert found.group(3) == "3 hours ago"
    assert found.group(2).endswith(" UTC")
    assert "Active now" not in html


def test_the_customer_page_shows_the_newest_visits_with_what_they_came_with(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    from tests.app.test_visits import journey

    send(engine, team, *journey())
    customer = agent.get("/console/lookup?user_id=u-v").headers["Location"]
    html = without_bdi(agent.get(customer).get_data(as_text=True))
    rows = re.findall(r'<tr class="visit">(.*?)</tr>', html, re.S)
    assert len(rows) == 3
    phone, second, first = rows
    assert '<td class="length">3 min</td>' in phone and '<td class="entry">Orders</td>' in phone
    assert "Mobile Safari 17 · iOS 17 · iPhone</span>" in phone
    assert '<td class="length">25 min</td>' in second and '<td class="entry">Pricing</td>' in second
    assert '<td class="campaign">spring_sale (newsletter / email)</td>' in first
    assert '<span class="value">https://mail.example/</span>' in first
    assert re.search(r'<time datetime="2024-05-01T09:00:00Z"', first)


def test_a_visits_length_reads_as_an_agent_says_it() -> None:
    from app.console.present import campaign_text, device_text, duration

    assert [duration(s) for s in (0, 59, 60, 25 * 60, 3600, 3900)] == [
        "under a minute", "under a minute", "1 min", "25 min", "1 h", "1 h 5 min"
    ]  # fmt: skip
    assert campaign_text({"source": "google", "medium": "cpc"}) == "google / cpc"
    assert campaign_text({"name": "x"}) == "x" and campaign_text("x") is None and campaign_text({}) is None
    assert device_text({"browser": "Firefox 125", "os": None, "device": None}) == "Firefox 125"


def test_a_deep_link_with_at_opens_the_thirty_minutes_before_it(
    agent: FlaskClient, engine: Engine, team: TeamKeys
) -> None:
    send(engine, team, *[
        {"type": "track", "userId": "u-at", "event": f"Step {minute}", "timestamp": at(minute),
         "messageId": f"at-{minute}"}
        for minute in (0, 40, 50, 65, 80)
    ])  # fmt: skip
    wrote = at(70)  # when the ticket came in
    found = agent.get(f"/console/lookup?user_id=u-at&at={wrote}")
    assert found.status_code == 303
    location = found.headers["Location"]
    assert location.endswith("?since=2024-03-01T12%3A40%3A00Z&until=2024-03-01T13%3A10%3A01Z")
    html = without_bdi(agent.get(location).get_data(as_text=True))
    assert re.findall(r'<span class="line">(.*?)</span>', html) == ["Step 65", "Step 50", "Step 40"]
    assert 'id="window">Showing events from <time datetime="2024-03-01T12:40:00Z"' in html
    assert 'id="whole-journey"' in html
    assert agent.get("/console/lookup?user_id=u-at&at=yesterday").status_code == 400
    assert agent.get("/console/lookup?user_id=u-at&when=x").status_code == 400  # still no other argument
