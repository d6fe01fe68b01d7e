"""Headless Chromium from Debian's packages, driven by its own chromedriver (never a browser
downloaded at test time), for the console's and analytics.js's browser tests.

`require_chromium()` at the top of a test module: under CI a missing browser is an error
(`.ci/run` installs chromium and chromium-driver); elsewhere the module is skipped, saying
what to install. `chromium()` starts one with a fresh profile, its console log kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Without the background-networking flags Chromium reaches for Google's hosts, which this
# machine's closed network refuses.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
)


def require_chromium() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI is set but chromium or chromedriver is missing: install Debian's chromium and "
            "chromium-driver (.ci/run does)."
        )
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver); "
        "CI runs these tests",
        allow_module_level=True,
    )


@contextmanager
def chromium(*flags: str, zone: str | None = None, unhandled_prompt: str | None = None) -> Iterator[Any]:
    """A headless Chromium (a selenium WebDriver), quit and its profile removed afterwards.

    `zone`: the time zone the browser and its pages live in; `unhandled_prompt`: what
    chromedriver does with a dialog a test did not expect (selenium's names).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tl-chromium-")
    for flag in (*FLAGS, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if unhandled_prompt is not None:
        options.unhandled_prompt_behavior = unhandled_prompt
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "TZ": zone} if zone else None
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, env=env), options=options)
    try:
        if zone:
            driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": zone})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def browser_problems(driver: Any) -> list[str]:
    """What the browser logged as a warning or an error (a CSP violation, a script error),
    but for the pages answered 401 or 404 on purpose, which are logged too."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING")
        and "the server responded with a status of 40" not in entry["message"]
    ]
