"""One config object: read from the environment once, by whoever builds the process."""

from __future__ import annotations

import os
import runpy
import shutil
from pathlib import Path

from app.serving.worker import ReadDeadlines
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
URLS = {"DATABASE_URL": "postgresql://h/db", "REDIS_URL": "redis://h/0"}


def test_settings_carry_what_the_processes_used_to_read_at_request_time() -> None:
    settings = Settings.from_env(
        {
            **URLS,
            "WEB_CONCURRENCY": "3",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom",
            "DB_POOL_SIZE": "9",
            "KEY_CACHE_TTL": "2",
        }
    )
    assert settings.database_url == "postgresql+psycopg://h/db"
    assert settings.web_processes == 3
    assert settings.prometheus_multiproc_dir == "/tmp/prom"
    assert (settings.db_pool_size, settings.key_cache_ttl_seconds) == (9, 2.0)


def test_defaults_are_one_process_and_its_own_counters() -> None:
    settings = Settings.from_env(URLS)
    assert settings.web_processes == 1 and settings.prometheus_multiproc_dir is None
    assert (settings.db_pool_size, settings.key_cache_ttl_seconds) == (5, 0.5)
    for bad in ("", "0", "-2", "two", "²"):
        assert Settings.from_env({**URLS, "WEB_CONCURRENCY": bad}).web_processes == 1


def test_a_live_streams_heartbeat_is_15_s_unless_set_and_never_0() -> None:
    assert Settings.from_env(URLS).live_heartbeat_seconds == 15.0
    assert Settings.from_env({**URLS, "LIVE_HEARTBEAT_SECONDS": "1.5"}).live_heartbeat_seconds == 1.5
    for spinning in ("0", "-3"):
        assert Settings.from_env({**URLS, "LIVE_HEARTBEAT_SECONDS": spinning}).live_heartbeat_seconds == 0.1


def test_the_gunicorn_config_hands_workers_their_environment_and_writes_none() -> None:
    before = dict(os.environ)
    config = runpy.run_path(str(ROOT / "app" / "serving" / "gunicorn_config.py"))
    assert dict(os.environ) == before
    env = dict(item.split("=", 1) for item in config["raw_env"])
    assert env["WEB_CONCURRENCY"] == str(config["workers"])
    folder = env["PROMETHEUS_MULTIPROC_DIR"]
    assert Path(folder).is_dir()
    if "PROMETHEUS_MULTIPROC_DIR" not in before:
        shutil.rmtree(folder)


def test_no_web_module_reads_the_environment_but_gunicorns_own_settings() -> None:
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "app").rglob("*.py"))
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    ]
    # gunicorn's config, read once when gunicorn starts (bind, workers, keep-alive...);
    # the app, its console and gunicorn's worker class read Settings only.
    assert readers == ["app/serving/gunicorn_config.py"]


def test_the_read_deadlines_and_the_consoles_settings_come_from_the_same_names() -> None:
    defaults = Settings.from_env(URLS)
    assert (defaults.request_head_seconds, defaults.request_body_seconds) == (10.0, 30.0)
    assert (defaults.console_secret, defaults.console_cookie_secure) == ("", False)
    env = {
        **URLS,
        "REQUEST_HEAD_SECONDS": "2",
        "REQUEST_BODY_SECONDS": "3.5",
        "CONSOLE_SECRET": "pepper",
        "CONSOLE_COOKIE_SECURE": "1",
    }
    settings = Settings.from_env(env)
    assert (settings.request_head_seconds, settings.request_body_seconds) == (2.0, 3.5)
    assert (settings.console_secret, settings.console_cookie_secure) == ("pepper", True)
    assert ReadDeadlines.from_settings(settings) == ReadDeadlines(2.0, 3.5)
    assert ReadDeadlines() == ReadDeadlines.from_settings(defaults)
