"""The README's run command: services, migrations, a demo key, web + worker, a curl.

With DATABASE_URL / REDIS_URL set, those servers are used; unset, embedded ones start
under .local/. A team named "demo" and an ingest key for it are made on the first run
and kept in .local/demo.json, so the printed curl works on every run.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from devstack.embedded import EmbeddedRedis, start_postgres
from store.apikeys import create_key, create_team, key_digest
from store.engine import make_engine
from store.migrate import upgrade
from store.models import ApiKey
from store.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"


def ensure_services(env: dict[str, str]) -> list[EmbeddedRedis]:
    keep: list[EmbeddedRedis] = []
    if not env.get("DATABASE_URL"):
        print("DATABASE_URL unset: starting embedded Postgres in .local/postgres", file=sys.stderr)
        env["DATABASE_URL"] = start_postgres(LOCAL / "postgres")
    if not env.get("REDIS_URL"):
        print("REDIS_URL unset: starting embedded Redis", file=sys.stderr)
        redis = EmbeddedRedis(LOCAL / "redis").start()
        keep.append(redis)
        env["REDIS_URL"] = redis.url
    return keep


def demo_key(settings: Settings) -> str:
    """The demo team's ingest+read key, made once and kept in .local/demo.json."""
    stored = LOCAL / "demo.json"
    engine = make_engine(settings, pool_size=1)
    try:
        if stored.exists():
            secret = json.loads(stored.read_text())["key"]
            with engine.connect() as connection:
                row = connection.execute(
                    select(ApiKey.id).where(
                        ApiKey.digest == key_digest(secret),
                        ApiKey.revoked_at.is_(None),
                        ApiKey.expires_at.is_(None),
                    )
                ).first()
            if row is not None:
                return str(secret)
        now = datetime.now(UTC)
        with engine.begin() as connection:
            team, _admin = create_team(connection, "demo", now)
            new = create_key(connection, team.id, "demo ingest", ("ingest", "read"), now)
        LOCAL.mkdir(exist_ok=True)
        stored.write_text(json.dumps({"team_id": team.id, "key": new.secret}))
        stored.chmod(0o600)
        return new.secret
    finally:
        engine.dispose()


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise SystemExit("a process exited during start-up; see the log above")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url}/readyz did not answer 200 within {seconds:.0f}s")


def main() -> None:
    env = dict(os.environ)
    keep = ensure_services(env)
    os.environ.update(env)
    settings = Settings.from_env(env)
    upgrade(env["DATABASE_URL"])
    secret = demo_key(settings)
    port = env.setdefault("PORT", "8000")
    bin_dir = Path(sys.executable).parent
    web = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "-c", "python:app.gunicorn_config", "app:create_app()"],
        cwd=ROOT,
        env=env,
    )
    worker = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env)
    processes = [web, worker]

    def stop(*_: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        for redis in keep:
            redis.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, processes)
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    event = json.dumps(
        {
            "type": "track",
            "userId": "user-1",
            "event": "Signed Up",
            "properties": {"plan": "pro"},
            "messageId": f"readme-{int(time.time())}",
        }
    )
    print(
        f"""
Ready: web on {base}, fold worker running. Ctrl-C stops both.

Post an event (the demo team's key, sent the way Segment sends it):

  curl -sS -X POST {base}/v1/segment \\
    -H 'Authorization: Basic {basic}' -H 'Content-Type: application/json' \\
    -d '{event}'

Then read the customer it made:

  curl -sS '{base}/api/v1/customers/lookup?user_id=user-1' -H 'Authorization: Bearer {secret}'
""",
        flush=True,
    )
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
    stop()


if __name__ == "__main__":
    main()
