"""The console's home in a real browser: who is active now, kept live (issue 24).

The served app, the browser and the signed-in agent are tests/app/test_console_browser.py's
fixtures (imported: this module gets its own gunicorn, browser and team). Events are
stored and folded by the test, as ingest and the worker would; the fold's `NOTIFY`
reaches the gunicorn's listener, its home stream says `news`, and the page's script
fetches the list again. The customer page's presence line changing live is held by
test_console_browser.py's `test_an_event_folded_while_the_page_is_open_appears_on_top_without_a_reload`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.app import test_console_browser as console_browser
from tests.app.test_console_browser import Console, send, wait_for
from tests.chromium import browser_problems

# Its fixtures, by the names the tests ask for (pytest finds fixtures in the module's names).
served = console_browser.served
browser = console_browser.browser
console = console_browser.console
signed_in = console_browser.signed_in

pytestmark = pytest.mark.slow


def stamp(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


def active_list(page: Console) -> list[str]:
    found: list[str] = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('#active-list li.active-customer'))"
        ".map(li => li.textContent.replace(/\\s+/g, ' ').trim())"
    )
    return found


def test_the_home_lists_a_customer_active_now_with_where_and_how_long_ago(signed_in: Console) -> None:
    send(signed_in.engine, signed_in.team, [
        {"type": "identify", "userId": "u-shopper", "timestamp": stamp(minutes=2), "messageId": "home-1",
         "traits": {"name": "Sam Shopper"}},
        {"type": "page", "userId": "u-shopper", "name": "Checkout", "timestamp": stamp(minutes=2),
         "messageId": "home-2", "context": {"page": {"url": "https://shop.test/checkout"}}},
    ])  # fmt: skip
    signed_in.open("/console/")
    # Read in one script: the list may be drawn again live (a fold notice) between a
    # lookup of an element and a read of it.
    heading, time_text, time_title = signed_in.driver.execute_script(
        "const when = document.querySelector('#active-list time.ago');"
        "return [document.querySelector('#active-customers h2').textContent.trim(),"
        " when.textContent.trim(), when.getAttribute('title') || ''];"
    )
    assert heading.startswith("Active now")
    assert active_list(signed_in) == ["Sam Shopper on Checkout 2 minutes ago"]
    assert time_text == "2 minutes ago"  # relative; the instant in the agent's zone on hover
    assert "(Asia/Tokyo)" in time_title
    # The journey fixture's customers were seen in 2024: listed below, not as active.
    assert "June Journey" in signed_in.text("table.customers")


def test_a_new_customers_event_appears_in_the_list_without_a_reload(signed_in: Console) -> None:
    signed_in.open("/console/")
    driver = signed_in.driver
    wait_for(signed_in, lambda: driver.execute_script(
        "return document.getElementById('active-customers').dataset.liveState") == "open")  # fmt: skip
    driver.execute_script("window.__samePage = 'yes'")
    shown = active_list(signed_in)
    assert not any("Fay Fresh" in row for row in shown)
    send(signed_in.engine, signed_in.team, [
        {"type": "identify", "userId": "u-fresh", "timestamp": stamp(seconds=3), "messageId": "fresh-1",
         "traits": {"name": "Fay Fresh", "email": "fay@example.com"}},
        {"type": "screen", "userId": "u-fresh", "name": "Order Status", "timestamp": stamp(seconds=2),
         "messageId": "fresh-2"},
    ])  # fmt: skip
    wait_for(signed_in, lambda: len(active_list(signed_in)) == len(shown) + 1, seconds=20)
    assert active_list(signed_in)[0] == "Fay Fresh fay@example.com on Order Status just now"  # newest first
    assert active_list(signed_in)[1:] == shown
    assert driver.execute_script("return window.__samePage") == "yes"  # no reload
    signed_in.assert_nothing_ran()


def test_the_home_broke_no_csp_rule_and_raised_no_script_error(signed_in: Console) -> None:
    signed_in.open("/console/")
    driver = signed_in.driver
    wait_for(signed_in, lambda: driver.execute_script(
        "return document.getElementById('active-customers').dataset.liveState") == "open")  # fmt: skip
    assert browser_problems(driver) == []
