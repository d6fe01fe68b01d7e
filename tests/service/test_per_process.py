"""Per-process state (service/per_process.py): a forked child makes its own, and each
process flushes what it made once, at exit.

The fork happens in a fresh interpreter (a small script run as a subprocess), so that
both processes exit as gunicorn's do, through the interpreter's own exit and its
`atexit` handlers, and pytest's own process never forks with its threads running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from service.per_process import PerProcess

ROOT = Path(__file__).resolve().parents[2]

# Each process prints JSON lines: what it saw, and each flush (`at_exit`) it ran.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    from service.per_process import PerProcess, start_daemon

    def say(**fields):
        print(json.dumps({"pid": os.getpid(), **fields}), flush=True)

    class Gathered:
        '''What a process gathers, and the thread that would write it.'''
        def __init__(self):
            self.items = []
            self.ran_in = None
            self.ran = threading.Event()
            self.thread = start_daemon(self.run, "gatherer")
        def run(self):
            self.ran_in = os.getpid()
            self.ran.set()
            threading.Event().wait()  # a daemon that lives as long as its process

    gathered = PerProcess(Gathered, at_exit=lambda g: say(flushed=g.items))
    untouched = PerProcess(Gathered, at_exit=lambda g: say(flushed_untouched=g.items))

    parent = gathered.get()
    parent.items.append("parent's")
    assert parent.ran.wait(10) and gathered.get() is parent
    untouched.get()  # made in the parent only
    child_pid = os.fork()
    if child_pid == 0:
        forgotten = gathered.made() is None
        child = gathered.get()
        child.items.append("child's")
        say(
            role="child",
            forgotten=forgotten,
            own_value=child is not parent,
            own_thread=child.thread is not parent.thread,
            thread_ran_here=child.ran.wait(10) and child.ran_in == os.getpid(),
            parents_thread_alive=parent.thread.is_alive(),
            threads=sorted(t.name for t in threading.enumerate()),
        )
        sys.exit(0)  # the interpreter's own exit: atexit runs
    _, status = os.waitpid(child_pid, 0)
    say(role="parent", child=child_pid, child_status=status)
    """
)


def run_script() -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_forked_child_makes_its_own_value_and_thread_and_each_process_flushes_once() -> None:
    lines = run_script()
    (parent,) = [line for line in lines if line.get("role") == "parent"]
    (child,) = [line for line in lines if line.get("role") == "child"]
    assert parent["child_status"] == 0
    assert child["pid"] == parent["child"]
    assert child["forgotten"] and child["own_value"] and child["own_thread"]
    assert child["thread_ran_here"]  # the child's thread runs, in the child
    assert not child["parents_thread_alive"]  # a fork copies no thread
    assert child["threads"] == ["MainThread", "gatherer"]
    flushes = [(line["pid"], line["flushed"]) for line in lines if "flushed" in line]
    # Each process flushed once, and only what it gathered itself.
    assert sorted(flushes) == sorted([(parent["pid"], ["parent's"]), (child["pid"], ["child's"])])
    # A value the child never asked for is flushed by the parent that made it, not by the child.
    untouched = [line["pid"] for line in lines if "flushed_untouched" in line]
    assert untouched == [parent["pid"]]


def test_a_value_is_made_once_per_process_and_not_before_it_is_asked_for() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(len(made))
        return len(made)

    local = PerProcess(make)
    assert local.made() is None and made == []
    assert local.get() == 1
    assert local.get() == 1
    assert local.made() == 1 and made == [0]
