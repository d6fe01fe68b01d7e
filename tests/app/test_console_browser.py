"""The console in a real browser: Debian's headless Chromium through its chromedriver (SPEC §10).

One gunicorn (two workers, as production runs it: a session signed by one worker is
read by the other) serves a folded team on 127.0.0.1; one browser walks the pages as an
agent would. Nothing is downloaded: selenium is given the driver and the browser, so
Selenium Manager never runs.

Skipped, saying why, only outside CI when chromium is not installed; under CI
(`CI` set) a missing browser fails. `.ci/run` installs both packages.
With `CONSOLE_SCREENSHOT=1` the journey screenshot is written to docs/console.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import Engine

from schemas.segment import prepare_event
from store.apikeys import create_key, revoke_key
from store.events import store_events
from tests.chromium import chromium, require_chromium
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer
from workers.fold import fold_until_empty

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ZONE = "Asia/Tokyo"  # UTC+9: the agent's days and times differ from UTC's
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)  # 19:00 in Tokyo; +6 h crosses midnight there
TRACKS = 120  # with the rest, three pages of 50
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2;alert(1)">'

require_chromium()

from selenium.common.exceptions import (  # noqa: E402 (only once the browser is known to exist)
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def send(engine: Engine, team: TeamKeys, events: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    store_events(engine, team.id, [prepare_event(event, now) for event in events], now)
    fold_until_empty(engine, team.id)


def journey_events() -> list[dict[str, Any]]:
    """An old login's visit, an anonymous visit, identify, alias, then a long known stretch."""
    events: list[dict[str, Any]] = [
        {"type": "track", "userId": "legacy-7", "event": "Logged In", "timestamp": at(0),
         "messageId": "j-old"},
        *[
            {"type": "page", "anonymousId": "anon-j", "name": name, "timestamp": at(1 + n),
             "messageId": f"j-page-{n}",
             "context": {"page": {"url": f"https://shop.test/{name.lower()}", "title": f"{name} | Shop"}}}
            for n, name in enumerate(["Home", "Pricing", "Signup"])
        ],
        {"type": "identify", "userId": "u-journey", "anonymousId": "anon-j", "timestamp": at(10),
         "messageId": "j-identify",
         "traits": {"email": "june.journey@example.com", "name": "June Journey", "plan": "trial"}},
        {"type": "alias", "userId": "u-journey", "previousId": "legacy-7", "timestamp": at(11),
         "messageId": "j-alias"},
        {"type": "group", "userId": "u-journey", "groupId": "g-acme", "timestamp": at(12),
         "messageId": "j-group",
         "traits": {"name": "Acme Corp", "employees": 120, "industry": "Rockets"}},
    ]  # fmt: skip
    for n in range(TRACKS):
        name = "Order Completed" if n % 10 == 0 else "Product Viewed"
        events.append(
            {"type": "track", "userId": "u-journey", "event": name, "timestamp": at(20 + 3 * n),
             "messageId": f"j-track-{n}", "properties": {"sku": f"SKU-{n}", "price": n}}
        )  # fmt: skip
    return events


def hostile_events() -> list[dict[str, Any]]:
    return [
        {"type": "identify", "userId": "u-evil", "timestamp": at(0), "messageId": "h-identify",
         "traits": {"name": HOSTILE, "email": "evil@example.com", "website": "javascript:alert(1)"}},
        {"type": "page", "userId": "u-evil", "name": HOSTILE, "timestamp": at(1), "messageId": "h-page",
         "properties": {"url": "javascript:window.__pwned=3", "html": "<b onmouseover=alert(1)>bold</b>"},
         "context": {"page": {"url": "javascript:window.__pwned=4",
                              "title": "</title><script>alert(1)</script>"}}},
        {"type": "track", "userId": "u-evil", "event": HOSTILE, "timestamp": at(2), "messageId": "h-track",
         "properties": {"link": "javascript:window.__pwned=5", HOSTILE: HOSTILE}},
    ]  # fmt: skip


def left_the_document(element: WebElement) -> bool:
    """Whether the page that held `element` is gone. Selenium's `staleness_of` knows one
    answer for that; Chromium gives a second while it swaps documents ("Node with given id
    does not belong to the document", seen in CI with chromium 156): both mean gone."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error):
            return True
        raise
    return False


class Console:
    """The served app, the data in it, and the browser."""

    def __init__(self, url: str, driver: WebDriver, team: TeamKeys, other: TeamKeys, engine: Engine):
        self.url = url
        self.driver = driver
        self.team = team
        self.other = other
        self.engine = engine

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)
        self.wait_ready()

    def wait_ready(self) -> None:
        WebDriverWait(self.driver, 10).until(
            lambda d: d.execute_script(
                "return document.readyState === 'complete' && "
                "(document.body.dataset.ready === '1' || !document.querySelector("
                "'script[src$=\"console.js\"]'))"
            )  # fmt: skip
        )

    def follow(self, element: WebElement, submit: bool = False) -> None:
        """Click a link or button (or submit a form) and wait for the next page to be ready."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        element.submit() if submit else element.click()
        WebDriverWait(self.driver, 10).until(lambda _: left_the_document(old))
        self.wait_ready()

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def sign_in(self, secret: str) -> None:
        self.open("/console/sign-in")
        self.find("#key").send_keys(secret)
        self.follow(self.find("#sign-in"))

    def sign_out(self) -> None:
        if self.all("#sign-out"):
            self.follow(self.find("#sign-out"))

    def events(self) -> list[dict[str, str]]:
        """The timeline as shown: each item's id, type, event time, line and who."""
        found: list[dict[str, str]] = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#timeline li.event')).map(li => ({"
            "id: li.dataset.id, time: li.dataset.time, known: li.dataset.known,"
            "type: li.className.match(/type-(\\w+)/)[1],"
            "line: li.querySelector('.line').textContent, who: li.querySelector('.who').textContent.trim()}))"
        )
        return found

    def load_all_older(self) -> int:
        """Press "Older events" until the journey's start; how many pages it loaded."""
        pages = 0
        while self.all("#older"):
            shown = len(self.events())
            self.find("#older").click()
            WebDriverWait(self.driver, 10).until(
                lambda _: len(self.events()) > shown or not self.all("#older")  # noqa: B023
            )
            pages += 1
        return pages

    def feed_ids(self, path: str) -> list[str]:
        """Every id of a feed, newest first, as the read API pages it."""
        ids: list[str] = []
        cursor = None
        while True:
            response = requests.get(
                self.url + path,
                params={"limit": 200, **({"cursor": cursor} if cursor else {})},
                headers=self.team.bearer(self.team.read),
                timeout=10,
            )
            response.raise_for_status()
            page = response.json()
            ids += [item["id"] for item in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return ids

    def customer_id(self, user_id: str) -> str:
        response = requests.get(
            f"{self.url}/api/v1/customers/lookup",
            params={"user_id": user_id},
            headers=self.team.bearer(self.team.read),
            timeout=10,
        )
        response.raise_for_status()
        found: str = response.json()["id"]
        return found

    def assert_nothing_ran(self) -> None:
        with pytest.raises(NoAlertPresentException):
            self.driver.switch_to.alert.text  # noqa: B018 (the property raises when no dialog is open)
        assert self.driver.execute_script("return window.__pwned === undefined")


@pytest.fixture(scope="module")
def served(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with two sync workers on a free loopback port."""
    with GunicornServer(tmp_path_factory.mktemp("console-gunicorn")) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium in the agent's zone; a dialog stays open, for the test to see."""
    with chromium("--window-size=1200,900", zone=ZONE, unhandled_prompt="ignore") as driver:
        yield driver


@pytest.fixture(scope="module")
def console(served: str, browser: WebDriver, engine: Engine) -> Console:
    team = make_team(engine, "console team")
    other = make_team(engine, "console other team")
    send(engine, team, journey_events() + hostile_events())
    send(engine, other, [{"type": "identify", "userId": "u-other", "timestamp": at(0), "messageId": "o1",
                          "traits": {"email": "other@example.com", "name": "Other Team's"}}])  # fmt: skip
    return Console(served, browser, team, other, engine)


@pytest.fixture
def signed_in(console: Console) -> Console:
    if not console.all("#sign-out"):
        console.sign_in(console.team.read)
        assert console.all("#sign-out"), console.driver.page_source[:2000]
    return console


def wait_for(console: Console, condition: Callable[[], bool], seconds: float = 10) -> None:
    WebDriverWait(console.driver, seconds).until(lambda _: condition())


# -- the tests, in the order an agent meets the pages ------------------------------------


def test_a_wrong_key_gets_a_clear_message_and_a_read_key_signs_in(console: Console) -> None:
    console.sign_out()
    console.sign_in("tlk_this-is-not-a-key")
    assert "That key is not recognised" in console.text("#problem")
    assert console.driver.current_url.endswith("/console/sign-in")
    console.sign_in(console.team.read)
    assert console.text("h1") == "Customers, most recently seen first"
    assert "June Journey" in console.text("table.customers")
    cookies = {c["name"]: c for c in console.driver.get_cookies()}
    session = cookies["console_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert console.team.read not in session["value"]
    assert console.driver.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts


def test_search_by_an_email_prefix_opens_the_customer(signed_in: Console) -> None:
    box = signed_in.find("form.search input[name=q]")
    box.clear()
    box.send_keys("JUNE.jour")
    signed_in.follow(box, submit=True)
    rows = signed_in.all("table.customers tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text for row in rows] == [
        "june.journey@example.com"
    ]
    signed_in.follow(rows[0].find_element(By.CSS_SELECTOR, "a.customer-link"))
    assert signed_in.text("#customer-name") == "June Journey"


def test_the_anonymous_visit_and_the_aliased_login_are_one_journey_in_event_time_order(
    signed_in: Console,
) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    assert signed_in.text("#customer-name") == "June Journey"
    assert signed_in.text("#user-ids").split() == ["legacy-7", "u-journey"]
    assert signed_in.text("#anonymous-ids") == "anon-j"
    assert signed_in.text("#event-count") == str(TRACKS + 7)
    traits = signed_in.text("#traits")
    assert "plan trial" in traits and "email june.journey@example.com" in traits
    # Walk to the oldest page; its end is the start of the journey.
    signed_in.load_all_older()
    shown = signed_in.events()
    oldest = shown[-7:]
    assert [(e["type"], e["line"]) for e in oldest] == [
        ("group", "Joined group Acme Corp"),
        ("alias", "Identified as u-journey (was legacy-7)"),
        ("identify", "Identified as u-journey; traits updated: email, name, plan"),
        ("page", "Viewed page Signup · Signup | Shop"),
        ("page", "Viewed page Pricing · Pricing | Shop"),
        ("page", "Viewed page Home · Home | Shop"),
        ("track", "Logged In"),
    ]
    assert [e["who"] for e in oldest[3:6]] == ["anonymous anon-j"] * 3
    times = [e["time"] for e in shown]
    assert times == sorted(times, reverse=True)
    # Where the known part meets the anonymous visit, the page says it is the same person.
    note = signed_in.find("li.journey-note")
    assert "Before this, the same person browsed anonymously" in note.text and "anon-j" in note.text
    following = note.find_element(By.XPATH, "following-sibling::li[contains(@class,'event')][1]")
    assert following.get_attribute("data-id") == oldest[3]["id"]
    assert signed_in.text("#journey-start") == "This is the start of the journey."


def test_older_pages_load_to_the_end_with_nothing_repeated_or_skipped(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    pages = 1
    assert len(signed_in.events()) == 50
    pages += signed_in.load_all_older()
    ids = [e["id"] for e in signed_in.events()]
    assert pages == 3
    assert len(ids) == len(set(ids)) == TRACKS + 7
    customer = signed_in.customer_id("u-journey")
    assert ids == signed_in.feed_ids(f"/api/v1/customers/{customer}/feed")


def test_times_are_in_the_agents_zone_with_utc_on_hover_and_days_are_the_agents(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    first = signed_in.find("#timeline li.event time")
    newest = T0 + timedelta(minutes=20 + 3 * (TRACKS - 1))  # 2024-03-01 16:17 UTC = 02 March 01:17 Tokyo
    assert first.get_attribute("datetime") == newest.isoformat().replace("+00:00", "Z")
    assert first.text.replace("\u202f", " ") in ("01:17:00", "01:17:00 AM", "1:17:00 AM")
    assert (first.get_attribute("title") or "").startswith("2024-03-01 16:17:00 UTC")
    days = [day.text for day in signed_in.all("#timeline li.day h3")]
    assert days[0] == "Saturday, March 2, 2024"  # Tokyo's day, while UTC's is still the 1st
    assert "Friday, March 1, 2024" in days


def test_filters_by_type_and_event_name(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    signed_in.find("input[name=type][value=track]").click()
    signed_in.find("#event-filter").send_keys("Order Completed")
    signed_in.follow(signed_in.find("#apply-filters"))
    shown = signed_in.events()
    assert [e["line"] for e in shown] == ["Order Completed"] * (TRACKS // 10)
    assert "event=Order+Completed" in signed_in.driver.current_url
    signed_in.follow(signed_in.find("#clear-filters"))
    signed_in.find("input[name=type][value=page]").click()
    signed_in.follow(signed_in.find("#apply-filters"))
    assert [e["type"] for e in signed_in.events()] == ["page"] * 3
    assert not signed_in.all("#older")
    if os.environ.get("CONSOLE_SCREENSHOT"):
        screenshot(signed_in, ROOT / "docs" / "console.png")


def screenshot(console: Console, path: Path) -> None:
    """docs/console.png: the profile and the whole journey but the long run of tracks."""
    shown = ["page", "identify", "alias", "group"]
    query = "&".join(f"type={kind}" for kind in shown) + "&event=Logged+In"
    console.open("/console/lookup?user_id=u-journey")
    console.open(console.driver.current_url.split("?")[0].removeprefix(console.url) + "?" + query)
    console.find("#timeline li.event.type-identify summary").click()
    console.driver.set_window_size(1000, 1250)
    console.driver.execute_script("window.scrollTo(0, 0)")
    console.driver.save_screenshot(str(path))
    console.driver.set_window_size(1200, 900)


def test_a_deep_link_opens_the_customer_even_from_another_site(signed_in: Console) -> None:
    signed_in.open("/console/lookup?anonymous_id=anon-j")  # the visitor who became June
    assert signed_in.text("#customer-name") == "June Journey"
    target = f"{signed_in.url}/console/lookup?email={quote('June.Journey@example.com')}"
    # A ticketing tool's page: another site, so the Strict cookie stays off the first request.
    signed_in.driver.get(f"data:text/html,<a id=go href='{target}'>ticket</a>")
    signed_in.driver.find_element(By.ID, "go").click()
    wait_for(signed_in, lambda: bool(signed_in.all("#customer-name")))
    assert signed_in.text("#customer-name") == "June Journey"
    signed_in.open("/console/lookup?email=nobody%40example.com")
    assert signed_in.text("#not-found") == "Nothing in this team matches email nobody@example.com."


def test_the_group_page_shows_traits_and_members(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    signed_in.follow(signed_in.find("#groups a.group-link"))
    assert signed_in.text("#group-name") == "Acme Corp"
    traits = signed_in.text("#group-traits")
    assert "industry" in traits and "Rockets" in traits and "employees" in traits
    members = signed_in.all("table.customers a.customer-link")
    assert [m.text for m in members] == ["June Journey"]
    signed_in.follow(members[0])
    assert signed_in.text("#customer-name") == "June Journey"


def test_a_hostile_payload_stays_inert_text(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-evil")
    assert signed_in.text("#customer-name") == HOSTILE
    for summary in signed_in.all("#timeline details summary"):
        summary.click()  # open every item's details
    page_text = signed_in.find("main").text
    assert page_text.count(HOSTILE) >= 4
    assert "javascript:window.__pwned=3" in page_text
    assert signed_in.all("a[href^='javascript:' i]") == []
    assert signed_in.all("main img, main b, main script") == []
    signed_in.driver.execute_script(
        "document.querySelectorAll('main span.value, main dd').forEach("
        "s => s.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})))"
    )
    signed_in.assert_nothing_ran()
    # escaped text in the title, not markup (between FSI and PDI, its direction isolated)
    assert signed_in.driver.title.startswith("\u2068<script>")


def test_another_teams_customer_is_not_found(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-other")
    assert signed_in.text("h1") == "No such customer"
    assert signed_in.text("#not-found") == "Nothing in this team matches userId u-other."
    box = signed_in.find("form.search input[name=q]")
    box.send_keys("other")
    signed_in.follow(box, submit=True)
    assert signed_in.all("table.customers") == []


def test_the_pages_broke_no_csp_rule_and_raised_no_script_error(signed_in: Console) -> None:
    logs = signed_in.driver.get_log("browser")  # type: ignore[attr-defined]
    # Pages answered 401 or 404 on purpose are logged too; those are not problems.
    problems = [
        entry["message"]
        for entry in logs
        if entry["level"] in ("SEVERE", "WARNING")
        and "the server responded with a status of 40" not in entry["message"]
    ]
    assert problems == []
    assert logs  # the log is read at all: the refused sign-in and the 404s are in it


def test_a_key_revoked_while_signed_in_signs_the_agent_out(console: Console) -> None:
    with console.engine.begin() as connection:
        made = create_key(connection, console.team.id, "soon revoked", ["read"], datetime.now(UTC))
    console.sign_out()
    console.sign_in(made.secret)
    console.open("/console/lookup?user_id=u-journey")
    assert console.all("#older")
    with console.engine.begin() as connection:
        revoke_key(connection, console.team.id, made.key.id, datetime.now(UTC))
    revoked_at = time.monotonic()
    console.find("#older").click()  # the next request, even one made by our script
    wait_for(console, lambda: "/console/sign-in" in console.driver.current_url)
    assert (
        time.monotonic() - revoked_at < 5
    )  # (a generous bound for a loaded machine; the check is per request)
    console.wait_ready()
    assert "your key was revoked" in console.text("#notice")
    console.open("/console/lookup?user_id=u-journey")
    assert "/console/sign-in" in console.driver.current_url


# -- what the red-team pass found (issue 24) ------------------------------------------

RLO = "\u202e"


def test_the_sign_in_cookie_is_a_host_cookie_chromium_keeps_over_http_on_loopback(console: Console) -> None:
    console.sign_out()
    console.open("/console/sign-in")
    cookies = {cookie["name"]: cookie for cookie in console.driver.get_cookies()}
    kept = cookies.get("__Host-console_sign_in")
    assert kept is not None, cookies
    assert kept["secure"] is True and kept["path"] == "/" and kept["httpOnly"] is True
    assert "console_sign_in" not in cookies
    console.find("#key").send_keys(console.team.read)
    console.follow(console.find("#sign-in"))
    assert console.all("#sign-out")  # the double submit held: Chromium sent the cookie back
    assert "__Host-console_sign_in" not in {cookie["name"] for cookie in console.driver.get_cookies()}


def test_a_long_value_wraps_and_the_traits_table_stays_on_the_page(signed_in: Console) -> None:
    long_url = "https://shop.test/" + "a" * 3000
    send(signed_in.engine, signed_in.team, [
        {"type": "identify", "userId": "u-long", "timestamp": at(0), "messageId": "long-1",
         "traits": {"name": "Lon Gvalue", "homepage": long_url, "note": "x" * 3000, "k" * 250: "y"}},
    ])  # fmt: skip
    signed_in.open("/console/lookup?user_id=u-long")
    widths = signed_in.driver.execute_script(
        "const main = document.querySelector('main');"
        "return {table: document.querySelector('#traits').getBoundingClientRect().width,"
        " main: main.getBoundingClientRect().width, page: document.documentElement.scrollWidth,"
        " window: window.innerWidth,"
        " wrap: getComputedStyle(document.querySelector('#traits td a')).overflowWrap};"
    )
    assert widths["table"] <= widths["main"], widths
    assert widths["page"] <= widths["window"], widths
    assert widths["wrap"] == "anywhere"


def _text_after_isolate(console: Console, css: str) -> dict[str, float]:
    """The box of the first isolated element matching `css`, and that of the text right after it."""
    found: dict[str, float] = console.driver.execute_script(
        "const bdi = document.querySelector(arguments[0]);"
        "const range = document.createRange(); range.selectNodeContents(bdi.nextSibling);"
        "const after = range.getBoundingClientRect(), own = bdi.getBoundingClientRect();"
        "return {bdi_left: own.left, bdi_right: own.right, after_left: after.left,"
        " style: getComputedStyle(bdi).unicodeBidi};",
        css,
    )
    return found


def test_an_rlo_in_a_value_does_not_reverse_the_consoles_text_after_it(signed_in: Console) -> None:
    """Left to right after the value, as written: the closing quote and the headline's words."""
    send(signed_in.engine, signed_in.team, [
        {"type": "identify", "userId": f"u-{RLO}rlo", "anonymousId": "anon-rlo", "timestamp": at(0),
         "messageId": "rlo-1", "traits": {"name": f"Refund {RLO}00.001$ :tnuoma"}},
    ])  # fmt: skip
    signed_in.open(f"/console/?q={quote(RLO)}")
    quote_mark = _text_after_isolate(signed_in, "h1 #query")
    assert quote_mark["after_left"] >= quote_mark["bdi_right"] - 1, quote_mark
    assert quote_mark["style"] == "isolate"
    signed_in.open("/console/lookup?anonymous_id=anon-rlo")
    words = _text_after_isolate(signed_in, "#timeline .line bdi")  # "Identified as <bdi>u-…</bdi>; …"
    assert words["after_left"] >= words["bdi_right"] - 1, words
    assert (
        signed_in.driver.execute_script(
            "return getComputedStyle(document.querySelector('#traits .value')).unicodeBidi"
        )
        == "isolate"
    )


def test_presence_says_active_now_or_last_seen_relative_with_the_agents_time_on_hover(
    signed_in: Console,
) -> None:
    now = datetime.now(UTC)
    stamp = lambda delta: (now - delta).isoformat().replace("+00:00", "Z")  # noqa: E731
    send(signed_in.engine, signed_in.team, [
        {"type": "page", "userId": "u-here", "name": "Checkout", "timestamp": stamp(timedelta(minutes=1)),
         "messageId": "here-1", "context": {"page": {"url": "https://shop.test/checkout"}}},
        {"type": "track", "userId": "u-away", "event": "Logged Out", "messageId": "away-1",
         "timestamp": stamp(timedelta(hours=3, minutes=2))},
    ])  # fmt: skip
    signed_in.open("/console/lookup?user_id=u-here")
    assert signed_in.text("#presence") == "Active now on Checkout"
    signed_in.open("/console/lookup?user_id=u-away")
    shown = signed_in.find("#last-seen-ago")
    assert shown.text == "3 hours ago"  # the script leaves the relative text as it is
    title = shown.get_attribute("title") or ""
    assert f"({ZONE})" in title and title.endswith(" UTC")  # the instant, in the agent's zone, on hover


def test_the_journey_shows_its_visits_and_the_page_stays_within_the_window(signed_in: Console) -> None:
    signed_in.open("/console/lookup?user_id=u-journey")
    rows = signed_in.all("#visits tr.visit")
    # The fixture's journey: 09:00 UTC the old login, anonymous pages a minute on, then
    # tracks every 3 minutes: one visit.
    assert len(rows) == 1
    assert signed_in.text("#visits tr.visit td.entry") == "Home"
    assert signed_in.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    logs = [e for e in signed_in.driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert [e["message"] for e in logs if "status of 40" not in e["message"]] == []


def test_an_event_folded_while_the_page_is_open_appears_on_top_without_a_reload(signed_in: Console) -> None:
    """The page's stream (app/console/live.py): the new item on top, the presence line and
    the profile updated in place; the page itself is not loaded again."""
    now = datetime.now(UTC)
    stamp = lambda delta: (now - delta).isoformat().replace("+00:00", "Z")  # noqa: E731
    send(signed_in.engine, signed_in.team, [
        {"type": "track", "userId": "u-live", "event": "Opened App", "messageId": "live-1",
         "timestamp": stamp(timedelta(hours=2))},
    ])  # fmt: skip
    signed_in.open("/console/lookup?user_id=u-live")
    driver = signed_in.driver
    live_state = "return document.getElementById('timeline').dataset.liveState"
    wait_for(signed_in, lambda: driver.execute_script(live_state) == "open")
    driver.execute_script("window.__samePage = 'yes'")
    assert signed_in.text("#presence").startswith("Last seen")
    assert signed_in.text("#event-count") == "1"
    send(signed_in.engine, signed_in.team, [
        {"type": "page", "userId": "u-live", "name": "Billing", "messageId": "live-2",
         "timestamp": stamp(timedelta(seconds=5)), "context": {"page": {"url": "https://shop.test/billing"}}},
    ])  # fmt: skip
    wait_for(signed_in, lambda: len(signed_in.all("#timeline li.event")) == 2, seconds=20)
    newest = signed_in.events()[0]
    assert "Billing" in newest["line"], newest
    assert signed_in.text("#presence") == "Active now on Billing"
    assert signed_in.text("#event-count") == "2"
    assert driver.execute_script("return window.__samePage") == "yes"  # no reload
    signed_in.assert_nothing_ran()


# -- the journey at a glance (issue 24) ------------------------------------------------


def test_the_activity_chart_shows_the_days_with_events_and_the_current_visit(signed_in: Console) -> None:
    """The 90-day chart, drawn by the server: a bar for each UTC day with events, titled with
    its date and count, none for the other days; the listed visits marked under the bars,
    the current one apart; painted by console.css with no CSP report. (The fixture's
    journey is from 2024, long out of the window: this one is recent.)"""
    now = datetime.now(UTC)
    instants = [now - timedelta(days=200)]  # out of the window: neither a bar nor a mark
    for back in range(3, 85, 3):  # a visit every third day, of 1 to 13 events
        instants += [now - timedelta(days=back, minutes=n) for n in range(1 + back * back * 7 % 13)]
    instants += [now - timedelta(minutes=2), now - timedelta(minutes=1)]  # the current visit
    send(signed_in.engine, signed_in.team, [
        {"type": "track", "userId": "u-glance", "event": "Viewed Item", "messageId": f"glance-{n}",
         "timestamp": at_.isoformat().replace("+00:00", "Z")}
        for n, at_ in enumerate(instants)
    ])  # fmt: skip
    signed_in.driver.get_log("browser")  # type: ignore[attr-defined]  # (what came before is not this page's)
    signed_in.open("/console/lookup?user_id=u-glance")
    expected: dict[str, int] = {}
    for instant in instants[1:]:
        day = instant.date().isoformat()  # UTC days
        expected[day] = expected.get(day, 0) + 1
    shown = signed_in.driver.execute_script(
        "const svg = document.getElementById('activity');"
        "return {role: svg.getAttribute('role'),"
        " name: document.getElementById('activity-summary').textContent,"
        " days: Array.from(svg.querySelectorAll('g.day')).map(g => ({day: g.dataset.day,"
        "   bar: g.querySelector('rect.bar') !== null, title: g.querySelector('title').textContent})),"
        " marks: Array.from(svg.querySelectorAll('rect.visit')).map(r => ("
        "   {current: r.classList.contains('current'),"
        "   title: r.querySelector('title').textContent})),"
        " fill: getComputedStyle(svg.querySelector('rect.bar')).fill,"
        " width: svg.getBoundingClientRect().width, main: document.querySelector('main').clientWidth,"
        " fits: document.documentElement.scrollWidth <= window.innerWidth};"
    )
    assert shown["role"] == "img"
    assert shown["name"].startswith(f"{len(instants) - 1} events in the last 90 days ("), shown["name"]
    assert len(shown["days"]) == 90
    assert {d["day"] for d in shown["days"] if d["bar"]} == set(expected)
    for d in shown["days"]:
        count = expected.get(d["day"], 0)
        noun = "no events" if count == 0 else "1 event" if count == 1 else f"{count} events"
        assert d["title"].endswith(f": {noun}"), d
    # The visits the page lists (the newest five) are marked: the current one apart.
    assert len(signed_in.all("#visits tr.visit")) == 5
    assert sorted(m["current"] for m in shown["marks"]) == [False, False, False, False, True]
    current = next(m for m in shown["marks"] if m["current"])
    assert current["title"].startswith("Current visit, since ") and current["title"].endswith(
        "2 events, 0 pages"
    )
    assert shown["fill"] == "rgb(35, 87, 198)"  # console.css's accent: classes, no style attribute
    assert 0 < shown["width"] <= shown["main"] and shown["fits"], shown
    logs = signed_in.driver.get_log("browser")  # type: ignore[attr-defined]
    assert [e["message"] for e in logs if e["level"] in ("SEVERE", "WARNING")] == []
    signed_in.assert_nothing_ran()
    if os.environ.get("CONSOLE_SCREENSHOT"):  # docs/console-activity.png: the chart alone
        signed_in.find("#activity-chart").screenshot(str(ROOT / "docs" / "console-activity.png"))
    # Live: an event folded while the page is open is counted in today's bar, no reload.
    driver = signed_in.driver
    wait_for(signed_in, lambda: driver.execute_script(_LIVE_STATE) == "open")
    driver.execute_script("window.__chartPage = 'same'")
    today = "return document.querySelector('#activity g.day:last-of-type').dataset.events"
    before = int(driver.execute_script(today))
    send(signed_in.engine, signed_in.team, [
        {"type": "track", "userId": "u-glance", "event": "Viewed Item", "messageId": "glance-live",
         "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")},
    ])  # fmt: skip
    wait_for(signed_in, lambda: int(driver.execute_script(today)) == before + 1, seconds=20)
    assert driver.execute_script("return window.__chartPage") == "same"


_LIVE_STATE = "return document.getElementById('timeline').dataset.liveState"
