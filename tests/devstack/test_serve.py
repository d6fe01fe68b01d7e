"""`bin/serve` supervises: a child that dies is reported and started again, a crash loop
ends it non-zero naming the child; it prints the servers, a flask line and the demo keys.

The run starts the real command (gunicorn, `python -m workers`) on the test session's
Postgres and Redis (DATABASE_URL / REDIS_URL are set, so nothing embedded starts), with
its `.local` in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from devstack.embedded import free_port
from devstack.serve import Child, demo_keys, supervise
from devstack.stack import exit_status
from service.settings import Settings
from store.apikeys import KeyCache, create_key, create_team

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def wait_for(path: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in bin/serve's output:\n{path.read_text()}"
        time.sleep(0.1)


def call(
    url: str, key: str, body: dict[str, object] | None = None, more: dict[str, str] | None = None
) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(more or {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


@pytest.fixture
def serve(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    port = free_port()
    output = tmp_path / "serve.out"
    env = {
        **os.environ,  # the session's DATABASE_URL, REDIS_URL, FOLD_QUEUE, REDIS_PREFIX
        "LOCAL_DIR": str(tmp_path / "local"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "SWEEP_INTERVAL_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    with output.open("wb") as sink:
        process = subprocess.Popen([str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, stdout=sink, stderr=sink)
    yield process, output, f"http://127.0.0.1:{port}"
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_dead_worker_is_reported_and_started_again(
    serve: tuple[subprocess.Popen[bytes], Path, str], tmp_path: Path
) -> None:
    process, output, base = serve
    wait_for(output, r"Ready: web on ")
    text = output.read_text()
    assert os.environ["DATABASE_URL"] in text and os.environ["REDIS_URL"] in text
    demo = json.loads((tmp_path / "local" / "demo.json").read_text())
    assert demo["admin_key"] in text  # shown on the first run, kept beside the other keys
    # The ingest-only key (for Segment and browsers) and the read key, each with its use.
    assert re.search(rf"ingest-only +{demo['ingest_key']} +Segment, SDKs and browsers", text)
    assert re.search(rf"read +{demo['read_key']} +the console and the read API", text)

    worker_pid = int(wait_for(output, r"fold worker started \(pid (\d+)\)").group(1))
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(output, rf"fold worker \(pid {worker_pid}\) exited with killed by SIGKILL; restarting")
    wait_for(output, r"fold worker started again \(pid \d+\)")
    assert process.poll() is None

    # The restarted worker folds: an event posted now reaches its customer.
    event: dict[str, object] = {"type": "identify", "userId": "serve-user", "messageId": f"s-{time.time()}"}
    status, _ = call(f"{base}/v1/identify", demo["ingest_key"], event, {"Origin": "https://shop.example"})
    assert status == 200  # the ingest-only key is taken from a browser
    assert call(f"{base}/v1/identify", demo["read_key"], event)[0] == 403  # it cannot ingest
    assert call(f"{base}/api/v1/me", demo["ingest_key"])[0] == 200
    assert call(f"{base}/api/v1/customers/lookup?user_id=x", demo["ingest_key"])[0] == 403  # nor read
    deadline = time.monotonic() + 30
    while call(f"{base}/api/v1/customers/lookup?user_id=serve-user", demo["read_key"])[0] != 200:
        assert time.monotonic() < deadline, "the restarted worker never folded the event"
        time.sleep(0.2)
    assert call(f"{base}/api/v1/keys", demo["admin_key"])[0] == 200

    # The printed flask line works against the running stack.
    flask_line = wait_for(output, r"\n  (DATABASE_URL=.* --app app) teams create my-team\n").group(1)
    made = subprocess.run(
        f"{flask_line} teams create 'from serve'",
        shell=True,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["team"]["name"] == "from serve"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "bin/serve: stopped" in output.read_text()


def test_a_child_that_keeps_dying_ends_the_run_non_zero_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    def flaky() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    children = [Child("flaky worker", flaky)]
    assert supervise(children, lambda: False, first_pause=0.01) == 1
    said = capsys.readouterr().err
    assert "flaky worker (pid" in said and "exited with exit status 3; restarting" in said
    assert "5 deaths in 60s, giving up" in said


def test_exit_status_in_words() -> None:
    assert exit_status(-9) == "killed by SIGKILL"
    assert exit_status(0) == "exit status 0"


def test_a_demo_json_from_before_the_split_gets_an_ingest_only_and_a_read_key(
    settings: Settings, tmp_path: Path, engine: Engine
) -> None:
    """The team is kept; its old ingest+read key is left, and the split keys are made."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        team, admin = create_team(connection, "demo", now)
        old = create_key(connection, team.id, "demo ingest", ("ingest", "read"), now)
    local = tmp_path / "local"
    local.mkdir()
    (local / "demo.json").write_text(json.dumps({"team_id": team.id, "key": old.secret}))
    demo = demo_keys(settings, local)
    assert demo.team_id == team.id and demo.made_now == ["ingest_key", "read_key", "admin_key"]
    kept = json.loads((local / "demo.json").read_text())
    assert (kept["ingest_key"], kept["read_key"], kept["admin_key"]) == (
        demo.ingest_key,
        demo.read_key,
        demo.admin_key,
    )
    cache = KeyCache(engine)
    scopes = {name: cache.lookup(kept[name]).scopes for name in ("ingest_key", "read_key")}  # type: ignore[union-attr]
    assert scopes == {"ingest_key": {"ingest"}, "read_key": {"read"}}
    again = demo_keys(settings, local)
    assert again.made_now == [] and again.ingest_key == demo.ingest_key
    assert admin.secret != demo.admin_key  # the team's first admin key was never kept: a new one
