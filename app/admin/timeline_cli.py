"""`flask timeline move`: move the events stored before migration 0012 into the months, now.

The worker does the same by itself when it starts (`workers/__main__.py`); this runs it in
the foreground, for an operator who wants it done or watched (docs/retention.md, "The
timeline's months"). It prints a progress line on stderr every `EVERY_SECONDS` and a JSON
summary on stdout. Stopped or killed, it goes on where it was when run again: each step
is one transaction (store/timeline_move.py). Exit status 0 when the old table is gone,
1 when it stopped before (a team's fold stayed busy, or the final swap waited too long
for its lock: run it again).
"""

from __future__ import annotations

import json
import time

import click
from flask import Flask
from flask.cli import AppGroup

from app.resources import resources
from store.timeline_move import STEP_PAUSE_SECONDS, STEP_ROWS, MoveStep, move_timeline

timeline = AppGroup("timeline", help="The timeline's storage: move events stored before its months.")

EVERY_SECONDS = 5.0


@timeline.command("move")
@click.option("--step-rows", type=click.IntRange(1, 100_000), default=STEP_ROWS, show_default=True)
@click.option("--pause", type=click.FloatRange(0, 60), default=STEP_PAUSE_SECONDS, show_default=True)
def move(step_rows: int, pause: float) -> None:
    """Move every event of the old events table into the months, then swap them in."""
    engine = resources().engine
    moved = [0]
    last = [time.monotonic()]

    def on_step(step: MoveStep) -> None:
        moved[0] += step.moved
        if time.monotonic() - last[0] >= EVERY_SECONDS:
            last[0] = time.monotonic()
            click.echo(f"moved {moved[0]:,} events; now team {step.team_id}", err=True)

    run = move_timeline(engine, step_rows=step_rows, pause=lambda: _wait(pause), on_step=on_step)
    summary = {
        "moved": sum(run.moved.values()),
        "teams": len(run.moved),
        "steps": run.steps,
        "finished": run.finished,
    }
    click.echo(json.dumps(summary, indent=2))
    if not run.finished:
        raise click.exceptions.Exit(1)


def _wait(seconds: float) -> bool:
    """The pause between steps; never asks to stop (Ctrl-C does, and the run resumes later)."""
    time.sleep(seconds)
    return False


def init_app(app: Flask) -> None:
    app.cli.add_command(timeline)
