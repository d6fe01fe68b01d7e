"""The customer page's stream in a real browser, across a restart of the web workers and a
revoked key (issue 24's "Done when"): Chromium's own EventSource, a real gunicorn.

The page (app/console/static/console.js) opens `/console/customers/{id}/live`; on each
item it fetches itself again and puts the new items on top. What the browser's
EventSource received is recorded by a script Chromium adds to each document before the
page's own (`RECORDER`, through the DevTools protocol, so the page and its CSP are as
served): the items with their ids, each open and each error. So the test sees both the
stream (every event once, in order, across the reconnection) and the page (every event
once, newest first). Every wait is on a condition, with a deadline only against hanging.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from store.apikeys import create_key, revoke_key
from tests.app.test_console_browser import ZONE, Console, send
from tests.chromium import chromium
from tests.conftest import TeamKeys, make_team
from tests.servers import GunicornServer, web_workers

pytestmark = pytest.mark.slow

from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402 (after the module above required Chromium)
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Added to every document before its own scripts: EventSource as the browser has it, with
# what each instance receives written down in `window.__live`.
RECORDER = """
(function () {
  var Native = window.EventSource;
  if (!Native || window.__live) { return; }
  var live = window.__live = {opens: 0, errors: 0, items: [], ends: []};
  var Recorded = function (url, options) {
    var source = new Native(url, options);
    source.addEventListener("open", function () { live.opens += 1; });
    source.addEventListener("error", function () { live.errors += 1; });
    source.addEventListener("item", function (e) {
      live.items.push({id: e.lastEventId, event: JSON.parse(e.data).event});
    });
    source.addEventListener("end", function (e) { live.ends.push(e.data); });
    return source;
  };
  Recorded.prototype = Native.prototype;
  window.EventSource = Recorded;
})();
"""
# Long enough for gunicorn to start new workers and the browser to come back (its retry:
# is 2 s) on a loaded machine; a bound against hanging, not a measure.
BACK_SECONDS = 60
# The stream looks at the session again at each heartbeat (`quick_server`'s: 1 s).
REVOKED_SECONDS = 60


@pytest.fixture(scope="module")
def server(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """gunicorn with two gevent workers, as production runs it; the test restarts them."""
    with GunicornServer(tmp_path_factory.mktemp("console-live-gunicorn")) as served:
        yield served


@pytest.fixture
def quick_server(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The same, its streams' heartbeat 1 s instead of production's 15 (`LIVE_HEARTBEAT_SECONDS`):
    for the test that waits for the stream's next look at the session. `server` keeps 15 s,
    so a test that revokes a key just before it restarts the workers is not overtaken by a
    heartbeat."""
    folder = tmp_path_factory.mktemp("console-live-quick-gunicorn")
    with GunicornServer(folder, {"LIVE_HEARTBEAT_SECONDS": "1"}) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium("--window-size=1200,900", zone=ZONE, unhandled_prompt="ignore") as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        yield driver


@pytest.fixture(scope="module")
def team(engine: Engine) -> TeamKeys:
    return make_team(engine, "console live team")


def wait_until(driver: WebDriver, what: str, condition: Callable[[], Any], seconds: float) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda _: condition(), what)


def recorded(driver: WebDriver) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_script("return JSON.parse(JSON.stringify(window.__live))")
    return found


def track(user: str, name: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": name,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "messageId": f"{user}-{name}",
    }


def problems_in_the_browser_log(driver: WebDriver) -> list[str]:
    """CSP violations and script errors the browser logged. A connection cut by a killed
    worker is logged by the network (net::ERR_...), which is what the test does."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[attr-defined]
        if entry.get("source") in ("javascript", "security")
        or "Content Security Policy" in entry["message"]
        or "Uncaught" in entry["message"]
    ]


def restart_workers(server: GunicornServer, how: str) -> set[int]:
    """Restart every web worker (so the one holding the page's stream): `graceful`, as a
    deploy does (SIGHUP: gunicorn starts new workers and SIGTERMs the old), or `killed`
    (SIGKILL to each: the stream is cut, gunicorn starts new ones). The old pids."""
    old = web_workers(server)
    assert len(old) == 2, old
    if how == "graceful":
        server.processes[0].send_signal(signal.SIGHUP)
    else:
        for pid in old:
            os.kill(pid, signal.SIGKILL)
    return old


@pytest.mark.parametrize("how", ["graceful", "killed"])
def test_a_stream_cut_by_a_worker_restart_resumes_with_every_event_once_in_order(
    server: GunicornServer, browser: WebDriver, team: TeamKeys, engine: Engine, how: str
) -> None:
    console = Console(server.url, browser, team, team, engine)
    user = f"u-resume-{how}"
    now = datetime.now(UTC)
    moment = lambda n: now - timedelta(minutes=10) + timedelta(seconds=n)  # noqa: E731
    send(engine, team, [track(user, "Opened App", moment(0))])
    console.sign_in(team.read)
    console.open(f"/console/lookup?user_id={user}")
    wait_until(browser, "the stream open", lambda: recorded(browser)["opens"] == 1, BACK_SECONDS)
    browser.execute_script("window.__samePage = 'yes'")

    names = [f"Step {n}" for n in range(1, 10)]
    for n in (1, 2, 3):  # before the restart
        send(engine, team, [track(user, names[n - 1], moment(n))])
    wait_until(browser, "3 items", lambda: len(recorded(browser)["items"]) >= 3, BACK_SECONDS)
    # The page has fetched itself again and shows them (no fetch of it in flight when the
    # workers go: the page's script does not retry one that fails).
    wait_until(browser, "4 events on the page", lambda: len(console.events()) == 4, BACK_SECONDS)

    old = restart_workers(server, how)
    for n in (4, 5, 6):  # while the workers stop and start: no stream is open anywhere
        send(engine, team, [track(user, names[n - 1], moment(n))])
    wait_until(browser, "new workers", lambda: len(web_workers(server) - old) == 2, BACK_SECONDS)
    wait_until(browser, "the stream back", lambda: recorded(browser)["opens"] >= 2, BACK_SECONDS)
    for n in (7, 8, 9):  # on the stream the browser resumed
        send(engine, team, [track(user, names[n - 1], moment(n))])

    wait_until(browser, "9 items", lambda: len(recorded(browser)["items"]) >= 9, BACK_SECONDS)
    wait_until(browser, "10 events on the page", lambda: len(console.events()) >= 10, BACK_SECONDS)
    live = recorded(browser)
    assert [item["event"] for item in live["items"]] == names  # none repeated, none missing, in order
    positions = [tuple(map(int, item["id"].split("-"))) for item in live["items"]]
    assert positions == sorted(set(positions))
    assert live["errors"] >= 1 and live["opens"] >= 2  # the stream was cut, and came back
    assert live["ends"] == []
    assert [event["line"] for event in console.events()] == [*reversed(names), "Opened App"]
    assert browser.execute_script("return window.__samePage") == "yes"  # never reloaded
    assert problems_in_the_browser_log(browser) == []
    if how == "graceful":  # the old workers ended their streams and closed their connections
        wait_until(browser, "the old workers gone", lambda: not (web_workers(server) & old), BACK_SECONDS)
        assert "Worker graceful timeout" not in server.log_text()


def test_a_key_revoked_while_the_page_is_open_ends_the_stream_and_signs_the_agent_out(
    quick_server: GunicornServer, browser: WebDriver, team: TeamKeys, engine: Engine
) -> None:
    server = quick_server
    console = Console(server.url, browser, team, team, engine)
    admin = team.bearer(team.admin)
    made = requests.post(
        f"{server.url}/api/v1/keys",
        json={"name": "agent's key", "scopes": ["read"]},
        headers=admin,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    key = made.json()
    user = "u-revoked-while-open"
    send(engine, team, [track(user, "Opened App", datetime.now(UTC) - timedelta(minutes=5))])
    console.sign_out()
    console.sign_in(key["key"])
    console.open(f"/console/lookup?user_id={user}")
    wait_until(browser, "the stream open", lambda: recorded(browser)["opens"] == 1, BACK_SECONDS)

    revoked = requests.delete(f"{server.url}/api/v1/keys/{key['id']}", headers=admin, timeout=10)
    assert revoked.status_code == 204, revoked.text
    # Nobody touches the page: the stream ends, and the page goes to sign-in by itself.
    wait_until(
        browser, "the sign-in page", lambda: "/console/sign-in" in browser.current_url, REVOKED_SECONDS
    )
    console.wait_ready()
    assert "your key was revoked" in console.text("#notice")  # why, not only that
    assert console.all("#key")  # the sign-in form
    console.open(f"/console/lookup?user_id={user}")
    assert "/console/sign-in" in browser.current_url  # the session is over, not only the page
    assert problems_in_the_browser_log(browser) == []


def test_a_key_revoked_while_the_pages_worker_restarts_signs_the_agent_out_when_it_reconnects(
    server: GunicornServer, browser: WebDriver, team: TeamKeys, engine: Engine
) -> None:
    """The stream is cut (its worker killed) right after the key is revoked (as the CLI
    does, in the database): the page's EventSource reconnects to a new worker, which
    refuses the session; the refusal is an `end` event, so the page goes to sign-in
    instead of staying open and silently no longer live."""
    console = Console(server.url, browser, team, team, engine)
    with engine.begin() as connection:
        made = create_key(connection, team.id, "agent's other key", ["read"], datetime.now(UTC))
    user = "u-revoked-while-down"
    send(engine, team, [track(user, "Opened App", datetime.now(UTC) - timedelta(minutes=5))])
    console.sign_out()
    console.sign_in(made.secret)
    console.open(f"/console/lookup?user_id={user}")
    wait_until(browser, "the stream open", lambda: recorded(browser)["opens"] == 1, BACK_SECONDS)

    with engine.begin() as connection:
        revoke_key(connection, team.id, made.key.id, datetime.now(UTC))
    old = restart_workers(server, "killed")  # before the stream's next look at the session
    wait_until(browser, "the sign-in page", lambda: "/console/sign-in" in browser.current_url, BACK_SECONDS)
    console.wait_ready()
    assert "your key was revoked" in console.text("#notice")
    assert web_workers(server) - old  # it was a new worker that refused the session
    assert problems_in_the_browser_log(browser) == []
