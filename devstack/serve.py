"""The README's run command: services, migrations, demo keys, supervised web + worker.

With DATABASE_URL / REDIS_URL set, those servers are used; unset, embedded ones start
under .local/ (or `LOCAL_DIR`). A team named "demo" and three keys are made on the first
run and kept in .local/demo.json (mode 0600), so the printed curls work on every run: an
ingest-only key for Segment and browsers (a key in a web page is public, so a browser may
only use one that cannot read: SPEC §2), a read key for the console and the read API, and
an admin key for the keys API, printed when it is made. On the demo team's first run, a
few customers' journeys are sent through ingest (devstack/demo.py), so the console the
banner points to has something to show.

Supervision (docs/operations.md): bin/serve watches gunicorn, the fold worker and the
embedded Redis. A child that dies is reported with its exit status and started again,
after a pause that grows with each death (0.5 s, 1 s, 2 s ... 8 s). A child that dies
`GIVE_UP_AFTER` times within `GIVE_UP_WINDOW_SECONDS` is a crash loop: bin/serve stops
everything and exits with status 1, naming it. Ctrl-C / SIGTERM stop everything, exit 0.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from sqlalchemy import Engine, select

from devstack import demo as demo_journeys
from devstack.embedded import EmbeddedRedis
from devstack.stack import (
    NotReady,
    Services,
    exit_status,
    launch,
    stop_processes,
    wait_answering,
    web_command,
    worker_command,
)
from schemas.keys import SCOPES
from service.settings import Settings
from store.apikeys import create_key, create_team, key_digest
from store.engine import make_engine
from store.migrate import upgrade
from store.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent
GIVE_UP_AFTER = 5
GIVE_UP_WINDOW_SECONDS = 60.0
MAX_RESTART_PAUSE_SECONDS = 8.0


def say(message: str) -> None:
    print(f"bin/serve: {message}", file=sys.stderr, flush=True)


def local_dir(env: dict[str, str]) -> Path:
    return Path(env.get("LOCAL_DIR") or ROOT / ".local")


def ensure_services(env: dict[str, str], local: Path) -> EmbeddedRedis | None:
    """Set env's DATABASE_URL / REDIS_URL to embedded servers under `local` where unset;
    the embedded Redis, if one was started (bin/serve supervises it)."""
    services = Services.start(env, local, say)
    env.update(DATABASE_URL=services.database_url, REDIS_URL=services.redis_url)
    return services.redis


# The demo keys by their name in demo.json: their scopes and what each is for.
DEMO_KEYS = {
    "ingest_key": (("ingest",), "demo ingest", "Segment, SDKs and browsers (ingest only)"),
    "read_key": (("read",), "demo read", "the console and the read API"),
    "admin_key": (SCOPES, "demo admin", "the keys API (admin)"),
}


@dataclass
class DemoKeys:
    team_id: int
    ingest_key: str  # ingest only: safe in a web page
    read_key: str  # the console and the read API
    admin_key: str
    made_now: list[str] = field(default_factory=list)  # which of them this run made (demo.json names)


def _usable(engine: Engine, secret: str | None) -> bool:
    if not secret:
        return False
    with engine.connect() as connection:
        row = connection.execute(
            select(ApiKey.id).where(
                ApiKey.digest == key_digest(secret), ApiKey.revoked_at.is_(None), ApiKey.expires_at.is_(None)
            )
        ).first()
    return row is not None


def demo_keys(settings: Settings, local: Path) -> DemoKeys:
    """The demo team's ingest-only, read and admin keys, made once and kept in demo.json.

    A key that is missing or no longer usable is made again (a demo.json from before the
    keys were split kept one ingest+read "key": its team is kept, the key left unused).
    """
    stored = local / "demo.json"
    engine = make_engine(settings, pool_size=1)
    try:
        kept = json.loads(stored.read_text()) if stored.exists() else {}
        now = datetime.now(UTC)
        made: list[str] = []
        secrets = {name: kept.get(name) for name in DEMO_KEYS}
        team_id = int(kept.get("team_id") or 0)
        if not any(_usable(engine, secret) for secret in (*secrets.values(), kept.get("key"))):
            with engine.begin() as connection:
                team, admin = create_team(connection, "demo", now)
            team_id, secrets["admin_key"] = team.id, admin.secret
            made.append("admin_key")
        for name, (scopes, label, _) in DEMO_KEYS.items():
            if not _usable(engine, secrets[name]):
                with engine.begin() as connection:
                    secrets[name] = create_key(connection, team_id, label, scopes, now).secret
                made.append(name)
        demo = DemoKeys(
            team_id,
            str(secrets["ingest_key"]),
            str(secrets["read_key"]),
            str(secrets["admin_key"]),
            made,
        )
        if made:
            local.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps({"team_id": demo.team_id, **secrets}))
            stored.chmod(0o600)
        return demo
    finally:
        engine.dispose()


class Child:
    """One supervised process: how to start it, and its deaths so far."""

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen[bytes]],
        running: subprocess.Popen[bytes] | None = None,
    ):
        self.name = name
        self._start = start
        self.process = running or start()
        self.deaths: list[float] = []
        self.restart_at: float | None = None

    def dead(self) -> int | None:
        return self.process.poll() if self.restart_at is None else None

    def restart(self) -> None:
        self.process = self._start()
        self.restart_at = None
        say(f"{self.name} started again (pid {self.process.pid})")


def start_children(env: dict[str, str], redis: EmbeddedRedis | None) -> list[Child]:
    children = [
        Child("web (gunicorn)", lambda: launch(web_command(), env)),
        Child("fold worker", lambda: launch(worker_command(), env)),
    ]
    if redis is not None and redis.process is not None:

        def start_redis() -> subprocess.Popen[bytes]:
            redis.start()
            assert redis.process is not None
            return redis.process

        children.append(Child("embedded redis", start_redis, redis.process))
    for child in children:
        say(f"{child.name} started (pid {child.process.pid})")
    return children


def stop_children(children: list[Child]) -> None:
    stop_processes([child.process for child in children], grace=10)


def supervise(children: list[Child], stopping: Callable[[], bool], first_pause: float = 0.5) -> int:
    """Restart children that die until asked to stop (0) or one loops on dying (1)."""
    while not stopping():
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None and now >= child.restart_at:
                try:
                    child.restart()
                except Exception as error:  # e.g. the port is still taken: count it as a death
                    say(f"{child.name} could not start again: {error}")
                    child.restart_at = now + MAX_RESTART_PAUSE_SECONDS
                continue
            code = child.dead()
            if code is None:
                continue
            if stopping():  # Ctrl-C reaches the children too: they stop on their own
                break
            child.deaths = [t for t in child.deaths if now - t < GIVE_UP_WINDOW_SECONDS] + [now]
            if len(child.deaths) >= GIVE_UP_AFTER:
                say(
                    f"{child.name} (pid {child.process.pid}) exited with {exit_status(code)}: "
                    f"{len(child.deaths)} deaths in {GIVE_UP_WINDOW_SECONDS:.0f}s, giving up; "
                    "stopping everything"
                )
                return 1
            pause = min(first_pause * 2 ** (len(child.deaths) - 1), MAX_RESTART_PAUSE_SECONDS)
            say(
                f"{child.name} (pid {child.process.pid}) exited with {exit_status(code)}; "
                f"restarting in {pause:g}s"
            )
            child.restart_at = now + pause
        time.sleep(min(0.2, first_pause))
    return 0


def wait_ready(url: str, children: list[Child], seconds: float = 30) -> None:
    try:
        wait_answering(url + "/readyz", {child.name: child.process for child in children}, seconds=seconds)
    except NotReady as error:
        raise SystemExit(f"bin/serve: {error}") from None


def banner(base: str, env: dict[str, str], demo: DemoKeys, local: Path) -> str:
    basic = base64.b64encode(f"{demo.ingest_key}:".encode()).decode()
    event = json.dumps(
        {
            "type": "track",
            "userId": "user-1",
            "event": "Signed Up",
            "properties": {"plan": "pro"},
            "messageId": f"readme-{int(time.time())}",
        }
    )
    flask = (
        f"DATABASE_URL={shlex.quote(env['DATABASE_URL'])} REDIS_URL={shlex.quote(env['REDIS_URL'])} "
        f"{shlex.quote(str(Path(sys.executable).parent / 'flask'))} --app app"
    )
    kept = local / "demo.json"
    if "admin_key" in demo.made_now:
        admin = f"The demo team's admin key (shown this once; kept in {kept}):\n\n  {demo.admin_key}"
        bearer = demo.admin_key
    else:
        admin = f'The demo team\'s admin key is in {kept} ("admin_key"); list its keys:'
        bearer = "ADMIN_KEY"
    return f"""
Ready: web on {base}, fold worker running, supervised. Ctrl-C stops everything.

Open the console and sign in with the demo team's read key:

  {base}/console/
  {demo.read_key}

  (Maya Chen, Sam Okafor and an anonymous visitor from an ad are there to look at.
  The API is described at {base}/api/v1/openapi.json.)

  Postgres  {env["DATABASE_URL"]}
  Redis     {env["REDIS_URL"]}

Run flask commands against this stack (e.g. `teams create NAME`, `keys list --team ID`):

  {flask} teams create my-team

The demo team's keys (kept in {kept}):

  ingest-only  {demo.ingest_key}  {DEMO_KEYS["ingest_key"][2]}
  read         {demo.read_key}  {DEMO_KEYS["read_key"][2]}

Post an event with the ingest-only key, sent the way Segment sends it:

  curl -sS -X POST {base}/v1/segment \\
    -H 'Authorization: Basic {basic}' -H 'Content-Type: application/json' \\
    -d '{event}'

Then read the customer it made with the read key (or sign in to {base}/console with it):

  curl -sS '{base}/api/v1/customers/lookup?user_id=user-1' -H 'Authorization: Bearer {demo.read_key}'

{admin}

  curl -sS {base}/api/v1/keys -H 'Authorization: Bearer {bearer}'
"""


def seed_demo(base: str, demo: DemoKeys, local: Path) -> None:
    """The demo journeys, on the demo team's first run; a failure is said, not fatal."""
    try:
        if demo_journeys.seed_once(base, demo.team_id, demo.ingest_key, local):
            say("sent the demo team's journeys through ingest (devstack/demo.py)")
    except (OSError, RuntimeError) as error:
        say(f"could not send the demo journeys ({error}); the console starts empty")


def main() -> None:
    env = dict(os.environ)
    local = local_dir(env)
    redis = ensure_services(env, local)
    os.environ.update(env)
    settings = Settings.from_env(env)
    upgrade(env["DATABASE_URL"])
    demo = demo_keys(settings, local)
    port = env.setdefault("PORT", "8000")
    stop_asked: list[int] = []

    def ask_stop(signum: int, frame: FrameType | None) -> None:
        stop_asked.append(signum)

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    children = start_children(env, redis)
    status = 0
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, children)
        seed_demo(base, demo, local)
        print(banner(base, env, demo, local), flush=True)
        status = supervise(children, lambda: bool(stop_asked))
    finally:
        stop_children(children)
    if status:
        raise SystemExit(status)
    say("stopped")


if __name__ == "__main__":
    main()
