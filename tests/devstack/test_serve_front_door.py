"""A newcomer's `bin/serve`: it names the console and a read key to sign in with, the demo
team has journeys to look at (sent once), `/` leads to the console, and what it prints
holds no warning a newcomer cannot act on (gevent's MonkeyPatchWarning, alembic's set-up).

The run starts the real command on the test session's Postgres and Redis, with its
`.local` in a temporary folder, twice: the second run sends nothing again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from devstack.demo import journeys
from devstack.embedded import free_port
from schemas.segment import prepare_event
from store.migrate import alembic_config
from store.schema_version import head_revisions, is_current

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = r"/api/v1/keys -H 'Authorization: Bearer [^']+'\n"


def test_the_arbiter_imports_no_redis_so_gevent_patches_ssl_before_anyone_holds_it() -> None:
    """gunicorn's arbiter imports the config and the worker class before it forks; redis
    there (its asyncio part takes ssl.SSLContext by name) made every worker warn."""
    found = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::Warning",
            "-c",
            "import sys, app.serving.gunicorn_config, app.serving.worker\n"
            "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith(('redis.', 'alembic'))))",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def test_readiness_reads_the_schema_version_as_alembic_does_without_importing_it(engine: Engine) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert head_revisions() == heads
    assert is_current(engine)


def test_the_demo_journeys_are_valid_segment_calls_with_what_the_console_shows() -> None:
    now = datetime.now(UTC)
    events = journeys(now)
    for event in events:
        prepare_event(event, now)  # raises on an event ingest would refuse
    assert len({event["messageId"] for event in events}) == len(events)
    kinds = {event["type"] for event in events}
    assert {"page", "track", "identify", "group"} <= kinds
    assert any(
        "campaign" in event["context"] and "referrer" in event["context"].get("page", {}) for event in events
    )
    assert all(event["context"]["userAgent"] for event in events)
    maya = [event for event in events if event["messageId"].startswith("demo-maya")]
    assert len({event["context"]["userAgent"] for event in maya}) == 2  # a second device
    assert [e for e in maya if e.get("event") == "Help Requested"]
    assert len([e for e in maya if e.get("event") == "Order Completed"]) == 2


def _wait_for(path: Path, pattern: str, timeout: float = 90) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in bin/serve's output:\n{path.read_text()}"
        time.sleep(0.1)


class Run:
    def __init__(self, local: Path, output: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.output = output
        env = {
            **os.environ,  # the session's DATABASE_URL, REDIS_URL, FOLD_QUEUE, REDIS_PREFIX
            "LOCAL_DIR": str(local),
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "SWEEP_INTERVAL_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
        with output.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, stdout=sink, stderr=sink
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def _signed_in(base: str, read_key: str) -> requests.Session:
    """A session signed in to the console as a browser would (the sign-in cookie is a
    `__Host-` one, which Python's cookie jar keeps to https: sent by hand over http)."""
    session = requests.Session()
    form = session.get(base + "/console/sign-in", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token
    cookie = form.cookies.get("__Host-console_sign_in")
    assert cookie
    signed = session.post(
        base + "/console/sign-in",
        data={"csrf": token.group(1), "key": read_key},
        headers={"Cookie": f"__Host-console_sign_in={cookie}"},
        allow_redirects=False,
        timeout=10,
    )
    assert signed.status_code == 303, signed.text[:500]
    return session


def _event_count(base: str, read_key: str, email: str) -> Any:
    found = requests.get(
        base + "/api/v1/customers/lookup",
        params={"email": email},
        headers={"Authorization": f"Bearer {read_key}"},
        timeout=10,
    )
    return found.json().get("event_count") if found.status_code == 200 else None


@pytest.mark.slow
def test_a_fresh_serve_names_the_console_and_a_read_key_and_has_journeys_to_show(
    runs: list[Run], tmp_path: Path
) -> None:
    local = tmp_path / "local"
    launched = time.monotonic()
    first = Run(local, tmp_path / "first.out")
    runs.append(first)
    _wait_for(first.output, BANNER_END)
    text = first.output.read_text()
    demo = json.loads((local / "demo.json").read_text())
    assert f"Open the console and sign in with the demo team's read key:\n\n  {first.base}/console/\n" in text
    assert f"\n  {demo['read_key']}\n" in text.split("Open the console", 1)[1]
    assert f"{first.base}/api/v1/openapi.json" in text
    assert "sent the demo team's journeys through ingest" in text
    # Nothing a newcomer cannot act on.
    assert "MonkeyPatchWarning" not in text
    assert "alembic" not in text

    front = requests.get(first.base + "/", allow_redirects=False, timeout=10)
    assert front.status_code == 302 and front.headers["Location"] == "/console/"
    assert "/api/v1/openapi.json" in front.headers["Link"]

    # The demo keys are split: the read key cannot ingest, the ingest-only key cannot read.
    refused = requests.post(
        first.base + "/v1/track",
        json={"type": "track", "userId": "x", "event": "E", "messageId": "m"},
        auth=(demo["read_key"], ""),
        timeout=10,
    )
    assert refused.status_code == 403
    lookup = first.base + "/api/v1/customers/lookup?user_id=u-maya-chen"
    assert (
        requests.get(
            lookup, headers={"Authorization": f"Bearer {demo['ingest_key']}"}, timeout=10
        ).status_code
        == 403
    )

    # The seeded journeys, folded, in the console the banner names.
    expected = len([e for e in journeys(datetime.now(UTC)) if e["messageId"].startswith("demo-maya")])
    deadline = time.monotonic() + 60
    while _event_count(first.base, demo["read_key"], "maya.chen@example.com") != expected:
        assert time.monotonic() < deadline, "the demo journeys were never folded"
        time.sleep(0.2)
    console = _signed_in(first.base, demo["read_key"])
    home = re.sub(r"</?bdi>", "", console.get(first.base + "/console/", timeout=10).text)
    assert {"Maya Chen", "Sam Okafor", "Anonymous visitor"} <= set(
        re.findall(r'class="customer-link" href="[^"]+">([^<]+)</a>', home)
    )
    page = console.get(first.base + "/console/lookup?email=maya.chen%40example.com", timeout=10)
    lines = [
        re.sub(r"</?bdi>", "", line) for line in re.findall(r'<span class="line">(.*?)</span>', page.text)
    ]
    assert lines[0] == "Help Requested"
    assert lines.count("Order Completed") == 2
    assert "Joined group Northwind Traders" in lines
    assert lines[-1].startswith("Viewed page Home")  # the anonymous visit from the newsletter
    assert "utm_campaign=spring_sale" in page.text and "iPhone" in page.text
    # Her help request was sent a minute before the banner: active for four more minutes
    # (checked only while that holds, so a slow machine does not fail on the clock).
    if time.monotonic() - launched < 3 * 60:
        assert 'id="active-now">Active now</span> on <bdi id="current-place">Shipping help</bdi>' in page.text
    assert len(re.findall(r'<tr class="visit">', page.text)) == 3  # newsletter, phone, today
    first.stop()
    assert first.process.returncode == 0

    # A second run: the same keys, nothing sent again, nothing stored twice.
    second = Run(local, tmp_path / "second.out")
    runs.append(second)
    _wait_for(second.output, BANNER_END)
    again = second.output.read_text()
    assert "sent the demo team's journeys" not in again
    assert f"\n  {demo['read_key']}\n" in again
    assert _event_count(second.base, demo["read_key"], "maya.chen@example.com") == expected
