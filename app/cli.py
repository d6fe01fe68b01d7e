"""Bootstrapping commands, printing JSON (SPEC §5): `flask teams create NAME`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from app.resources import resources
from store.apikeys import create_team

teams = AppGroup("teams", help="Create teams.")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@teams.command("create")
@click.argument("name")
def teams_create(name: str) -> None:
    """Create a team and an admin key with every scope; the key is shown only here."""
    now = datetime.now(UTC)
    with resources().engine.begin() as connection:
        team, new_key = create_team(connection, name, now)
    echo_json(
        {
            "team": {"id": str(team.id), "name": team.name, "created_at": team.created_at.isoformat()},
            "key": {
                "id": str(new_key.key.id),
                "name": new_key.key.name,
                "prefix": new_key.key.prefix,
                "scopes": new_key.key.scopes,
                "key": new_key.secret,
            },
        }
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(teams)
