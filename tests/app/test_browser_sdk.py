"""analytics.js in a real browser (issue 21's Done-when): the real `@segment/analytics-next`
from npm, on a page of another origin, delivers to our running gunicorn.

A shop's page (tests/browser/page.html) is served by a second HTTP server on another port,
with the package's own browser bundle (`dist/umd`) beside it; headless Chromium (Debian's,
driven by its chromedriver, as tests/app/test_console_browser.py does) opens it with
`apiHost` pointing at gunicorn (`HOST:PORT/v1`, no scheme: analytics.js takes the scheme
from `protocol`). In each delivery mode of analytics.js (standard, standard with
`keepalive`, and `batching`, which posts to /v1/b), the page calls page, identify, track,
group and alias: each lands once, in call order, and the browser logs no error, CORS
included. Each mode uses its own team's ingest-only key, as a website must. The page
sample of docs/segment-destination.md runs the same way, its placeholders filled in.

The package comes from tests/browser/package-lock.json, installed by `npm ci` when missing
or stale (tests/node.py), never fetched otherwise. Skipped,
saying why, only outside CI when chromium is not installed, as the console's browser tests.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from devstack.embedded import free_port
from tests.chromium import chromium, require_chromium
from tests.conftest import make_team
from tests.node import node_packages
from tests.servers import GunicornServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tests" / "browser"
NODE_PACKAGES = [PACKAGE]  # installed ahead (tests/node.py)
BUNDLE = PACKAGE / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
CALLS = ["page", "identify", "track", "group", "alias"]
DOC = ROOT / "docs" / "segment-destination.md"
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/@segment/analytics-next@1.84.3/dist/umd/index.js"
MODES = ["standard", "keepalive", "batching"]

require_chromium()

from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402 (once the browser is known to exist)


@dataclass(frozen=True)
class Shop:
    """The shop's origin and the folder it serves."""

    url: str
    folder: Path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The shop's origin: the page and analytics.js's bundle, on a port of their own."""
    node_packages(PACKAGE)
    site = tmp_path_factory.mktemp("shop")
    shutil.copy(PACKAGE / "page.html", site / "index.html")
    (site / "analytics-next").mkdir()
    (site / "analytics-next" / "bundles").symlink_to(BUNDLE, target_is_directory=True)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Shop(f"http://127.0.0.1:{port}", site)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The service as production runs it: gunicorn, two workers."""
    with GunicornServer(tmp_path_factory.mktemp("sdk-gunicorn")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium from Debian, driven by its own chromedriver; its console log kept."""
    with chromium() as driver:
        yield driver


def stored(engine: Engine, team_id: int) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT type, message_id, raw FROM events WHERE team_id = :t ORDER BY id"),
                {"t": team_id},
            )
        )


def wait_for(what: str, condition: Any, seconds: float = 60) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("mode", MODES)
def test_analytics_js_on_another_origin_lands_every_call_once_in_order(
    mode: str, shop: Shop, served: GunicornServer, browser: WebDriver, engine: Engine
) -> None:
    team = make_team(engine, f"browser {mode}")
    user = f"browser-{mode}-{time.time_ns()}"
    browser.get_log("browser")  # type: ignore[attr-defined]  # drop what an earlier mode logged
    host = served.url.removeprefix("http://")
    browser.get(f"{shop.url}/index.html?mode={mode}&apiHost={host}/v1&key={team.ingest}&user={user}")

    wait_for("the page's calls to resolve", lambda: browser.execute_script("return window.__done === true"))
    page: dict[str, Any] = browser.execute_script(
        "return {calls: window.__calls, errors: window.__errors, failed: window.__failed}"
    )
    assert page["errors"] == [] and page["failed"] == [], page
    assert [call["type"] for call in page["calls"]] == CALLS

    rows = wait_for(
        f"{len(CALLS)} stored events",
        lambda: len(stored(engine, team.id)) >= len(CALLS) and stored(engine, team.id),
    )
    # Once, in call order: the messageIds analytics.js gave each call, in the order stored.
    assert [(row.type, row.message_id) for row in rows] == [
        (call["type"], call["messageId"]) for call in page["calls"]
    ]
    # Batching posts one {"batch": [...], "sentAt"} to /v1/b, without each event's sentAt.
    assert [("sentAt" in row.raw) for row in rows] == [mode != "batching"] * len(CALLS)
    identify, alias = rows[1].raw, rows[4].raw
    assert identify["userId"] == user and identify["traits"]["email"] == f"{user}@example.com"
    assert alias["previousId"] == user and alias["userId"], (
        alias
    )  # what analytics.js makes of alias(to, from)
    assert rows[0].raw["context"]["page"]["url"].startswith(shop.url)

    # Nothing refused, nothing retried: no error, CORS or other, in the browser's console.
    logged = browser.get_log("browser")  # type: ignore[attr-defined]
    problems = [entry["message"] for entry in logged if entry["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    assert not [entry for entry in logged if "CORS" in entry["message"]], logged
    assert (
        browser.execute_script(
            "return Object.keys(localStorage).filter((k) => k.includes('queue') && localStorage[k] !== '[]')"
        )
        == []
    )


def test_the_docs_page_sample_lands_its_calls(
    shop: Shop, served: GunicornServer, browser: WebDriver, engine: Engine
) -> None:
    """docs/segment-destination.md's analytics.js page, with an ingest key and our host put in."""
    team = make_team(engine, "browser doc sample")
    [sample] = re.findall(r"^```html\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    assert CDN_SCRIPT in sample, "the doc's page sample loads another analytics.js: update CDN_SCRIPT"
    filled = (
        sample.replace(CDN_SCRIPT, "/analytics-next/bundles/index.js")  # served here: nothing downloaded
        .replace('protocol: "https"', 'protocol: "http"')
        .replace("YOUR_INGEST_KEY", team.ingest)
        .replace("YOUR-DESTINATION-HOST/v1", served.url.removeprefix("http://") + "/v1")
    )
    page = f"doc-sample-{team.id}.html"
    (shop.folder / page).write_text(
        f'<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">{filled}'
    )
    browser.get_log("browser")  # type: ignore[attr-defined]
    browser.get(f"{shop.url}/{page}")
    rows = wait_for("3 stored events", lambda: len(stored(engine, team.id)) >= 3 and stored(engine, team.id))
    # The sample does not wait for one call before the next: they land in any order (the
    # timeline orders them by event time).
    assert sorted((row.type, row.raw.get("event") or row.raw.get("name") or "") for row in rows) == [
        ("identify", ""),
        ("page", "Pricing"),
        ("track", "Signed Up"),
    ]
    [identify] = [row.raw for row in rows if row.type == "identify"]
    assert identify["userId"] == "u-browser" and identify["traits"]["email"] == "ada@example.com"
    logged = browser.get_log("browser")  # type: ignore[attr-defined]
    assert not [entry["message"] for entry in logged if entry["level"] in ("SEVERE", "WARNING")], logged


def test_a_key_that_can_read_is_refused_and_the_browser_reads_the_refusal(
    shop: Shop, served: GunicornServer, browser: WebDriver, engine: Engine
) -> None:
    """An admin key in a page: each call is a 403 that analytics.js reads (CORS on errors too),
    so it drops the event instead of retrying it for ever, and nothing is stored."""
    team = make_team(engine, "browser admin key")
    host = served.url.removeprefix("http://")
    browser.get_log("browser")  # type: ignore[attr-defined]
    browser.get(f"{shop.url}/index.html?mode=standard&apiHost={host}/v1&key={team.admin}&user=leaky")
    wait_for("the page's calls to resolve", lambda: browser.execute_script("return window.__done === true"))
    # failedDelivery is set only for a status the page could read: a CORS failure is a
    # network error, which analytics.js retries instead.
    assert browser.execute_script("return window.__failed") == CALLS
    logged = browser.get_log("browser")  # type: ignore[attr-defined]
    assert not [entry for entry in logged if "CORS" in entry["message"]], logged
    assert [entry for entry in logged if "403" in entry["message"]], logged
    assert stored(engine, team.id) == []
