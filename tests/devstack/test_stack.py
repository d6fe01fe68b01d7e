"""devstack/stack.py: the one launcher of the Procfile stack (bin/serve, bin/faults,
bin/bench and tests/servers.py start, wait for and stop their processes with it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.embedded import free_port
from devstack.stack import (
    ROOT,
    NotReady,
    Services,
    exit_status,
    launch,
    procfile_command,
    stack_env,
    stop_processes,
    wait_answering,
    web_command,
    worker_command,
)


def test_the_commands_are_the_procfiles_lines_with_this_venvs_programs() -> None:
    web = web_command()
    assert Path(web[0]) == Path(sys.executable).parent / "gunicorn"
    assert web[1:] == ["-c", "python:app.serving.gunicorn_config", "app:create_app()"]
    assert web_command("bench.ceiling:app")[-1] == "bench.ceiling:app"
    assert worker_command() == [sys.executable, "-m", "workers"]
    with pytest.raises(RuntimeError, match="no 'clock' line"):
        procfile_command("clock")


def test_the_environment_names_each_setting_and_none_removes_a_variable() -> None:
    env = stack_env(
        {"KEEP": "1", "DROP": "2", "PORT": "1"},
        database_url="postgresql://db",
        fold_queue="fold-x",
        port=8123,
        web_workers=3,
        metrics_dir=Path("/tmp/m"),
        more={"DROP": None, "LOG_LEVEL": "debug"},
    )
    assert env == {
        "KEEP": "1",
        "PORT": "8123",
        "DATABASE_URL": "postgresql://db",
        "FOLD_QUEUE": "fold-x",
        "WEB_CONCURRENCY": "3",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/m",
        "LOG_LEVEL": "debug",
    }


def test_given_servers_are_used_and_none_is_started(tmp_path: Path) -> None:
    said: list[str] = []
    services = Services.start(
        {"DATABASE_URL": "postgresql://db", "REDIS_URL": "redis://r"}, tmp_path, said.append
    )
    assert (services.database_url, services.redis_url) == ("postgresql://db", "redis://r")
    assert services.postgres is None and services.redis is None and said == []
    assert list(tmp_path.iterdir()) == []


def python(code: str, log: Path) -> subprocess.Popen[bytes]:
    return launch([sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, log)


def wait_for_line(log: Path, line: str, process: subprocess.Popen[bytes]) -> None:
    while line not in log.read_text():
        assert process.poll() is None, log.read_text()


def test_a_process_runs_from_the_project_folder_and_appends_to_its_log(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("before\n")
    process = python("import os, sys; print(os.getcwd(), flush=True); print('err', file=sys.stderr)", log)
    assert process.wait(30) == 0
    assert log.read_text().splitlines() == ["before", str(ROOT), "err"]


def test_a_process_that_exits_during_start_up_is_named_with_its_status(tmp_path: Path) -> None:
    process = python("raise SystemExit(3)", tmp_path / "out.log")
    with pytest.raises(NotReady, match="^web exited during start-up with exit status 3$"):
        wait_answering(f"http://127.0.0.1:{free_port()}/readyz", {"web": process}, seconds=600)


def test_a_url_that_never_answers_runs_out_of_time() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    with pytest.raises(NotReady, match="did not answer 200 within 0s"):
        wait_answering(url, {}, seconds=0)


class Answering(BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(Answering.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_ready_once_the_url_answers_200_and_the_callers_condition_holds(server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    asked: list[int] = []

    def ready() -> bool:
        asked.append(1)
        if len(asked) == 1:
            return False  # e.g. gunicorn has no worker yet
        return True

    Answering.status = 503
    with pytest.raises(NotReady):
        wait_answering(url, {}, seconds=0, ready=ready)
    assert asked == []  # a 503 is not ready, whatever the condition
    Answering.status = 200
    wait_answering(url, {}, seconds=600, ready=ready, pause=0)
    assert len(asked) == 2


def test_a_process_that_ignores_the_stop_signal_is_killed_after_its_grace(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); "
        "time.sleep(600)",
        log,
    )
    wait_for_line(log, "ignoring", stubborn)
    stop_processes([stubborn], grace=0.2)
    assert stubborn.returncode == -signal.SIGKILL
    assert exit_status(stubborn.returncode) == "killed by SIGKILL"


def test_a_stopped_process_is_continued_so_that_it_can_stop(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    frozen = python("import time; print('up', flush=True); time.sleep(600)", log)
    wait_for_line(log, "up", frozen)
    frozen.send_signal(signal.SIGSTOP)
    stop_processes([frozen], stop_signal=signal.SIGINT, grace=60)
    assert frozen.returncode == -signal.SIGINT  # not SIGKILL: it ran, and Python handled SIGINT
    assert "KeyboardInterrupt" in log.read_text()
