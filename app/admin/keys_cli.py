"""Bootstrapping and operator commands, printing JSON (SPEC §5).

`flask teams create NAME`, `flask teams retention TEAM [--days N | --clear]` (docs/retention.md),
and `flask keys create|rotate|revoke|list`. A secret is
printed only by the command that creates it (teams create, keys create, keys rotate).
Changes made here are audited with the actor "cli". A refused change prints a JSON
error, `{"message", "code"}`, on stderr and exits with status 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import click
from flask import Flask
from flask.cli import AppGroup

from app.admin.key_shapes import created_key_json, key_json, rotated_key_json
from app.admin.retention import retention_json
from app.resources import resources
from schemas.keys import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS, MAX_NAME_LENGTH, SCOPES, name_problem
from store.apikeys import (
    KeyManagementError,
    create_key,
    create_team,
    list_keys,
    revoke_key,
    rotate_key,
    team_exists,
    team_of_key,
)
from store.retention import RetentionRefused, read_retention, set_retention

teams = AppGroup("teams", help="Create teams; show or set how long their events are kept.")
keys = AppGroup("keys", help="Create, rotate, revoke and list a team's API keys.")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def fail(code: str, message: str) -> NoReturn:
    click.echo(json.dumps({"message": message, "code": code}), err=True)
    raise click.exceptions.Exit(1)


def _team_of(key_id: int) -> int:
    with resources().engine.connect() as connection:
        team_id = team_of_key(connection, key_id)
    if team_id is None:
        fail("not_found", f"No key with id {key_id}.")
    return team_id


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A key or team name: printable, 1 to MAX_NAME_LENGTH characters (as the API wants)."""
    if len(value) > MAX_NAME_LENGTH:
        raise click.BadParameter(f"give 1 to {MAX_NAME_LENGTH} printable characters")
    problem = name_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


@teams.command("create")
@click.argument("name", callback=_name)
def teams_create(name: str) -> None:
    """Create a team and an admin key with every scope; the key is shown only here."""
    now = datetime.now(UTC)
    with resources().engine.begin() as connection:
        team, new_key = create_team(connection, name, now)
    echo_json(
        {
            "team": {"id": str(team.id), "name": team.name, "created_at": team.created_at.isoformat()},
            "key": created_key_json(new_key, now),
        }
    )


@teams.command("retention")
@click.argument("team_id", type=click.IntRange(min=1))
@click.option("--days", type=int, default=None, help="Keep this many days of events (1 to RETENTION_DAYS).")
@click.option(
    "--clear", is_flag=True, help="Drop the team's own setting: the operator's RETENTION_DAYS applies."
)
def teams_retention(team_id: int, days: int | None, clear: bool) -> None:
    """Show a team's retention, or set it (--days) or clear it (--clear); the same rule as the API."""
    if days is not None and clear:
        fail("invalid_retention", "Give --days or --clear, not both.")
    operator_days = resources().settings.retention_days
    try:
        with resources().engine.begin() as connection:
            if days is None and not clear:
                setting = read_retention(connection, team_id, operator_days)
                if setting is None:
                    fail("team_not_found", f"No team with id {team_id}.")
            else:
                setting = set_retention(connection, team_id, days, operator_days)
    except RetentionRefused as refused:
        fail(refused.code, refused.message)
    echo_json(retention_json(setting))


@keys.command("create")
@click.option("--team", "team_id", type=click.IntRange(min=1), required=True, help="The team's id.")
@click.option("--name", required=True, callback=_name, help="What the key is for, e.g. 'Segment production'.")
@click.option(
    "--scope", "scopes", type=click.Choice(SCOPES), multiple=True, required=True, help="Repeat for several."
)
def keys_create(team_id: int, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key for a team; its secret is printed only here."""
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            made = create_key(connection, team_id, name, scopes, now)
    except KeyManagementError as error:
        fail(error.code, error.message)
    echo_json(created_key_json(made, now))


@keys.command("rotate")
@click.argument("key_id", type=click.IntRange(min=1))
@click.option(
    "--grace",
    "grace_seconds",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Seconds the old key keeps working; 0 cuts it at once.",
)
def keys_rotate(key_id: int, grace_seconds: int) -> None:
    """Replace a key with a new one of the same name and scopes (printed only here)."""
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            rotation = rotate_key(
                connection, _team_of(key_id), key_id, now, grace=timedelta(seconds=grace_seconds)
            )
    except KeyManagementError as error:
        fail(error.code, error.message)
    echo_json(rotated_key_json(rotation, now))


@keys.command("revoke")
@click.argument("key_id", type=click.IntRange(min=1))
def keys_revoke(key_id: int) -> None:
    """Revoke a key at once (every web process refuses it within a second)."""
    now = datetime.now(UTC)
    try:
        with resources().engine.begin() as connection:
            revoked = revoke_key(connection, _team_of(key_id), key_id, now)
    except KeyManagementError as error:
        fail(error.code, error.message)
    echo_json(key_json(revoked, now))


@keys.command("list")
@click.option("--team", "team_id", type=click.IntRange(min=1), required=True, help="The team's id.")
def keys_list(team_id: int) -> None:
    """Every key of a team, newest first; never a secret."""
    now = datetime.now(UTC)
    with resources().engine.connect() as connection:
        if not team_exists(connection, team_id):
            fail("team_not_found", f"No team with id {team_id}.")
        found = list_keys(connection, team_id)
    echo_json({"data": [key_json(key, now) for key in found]})


def init_app(app: Flask) -> None:
    app.cli.add_command(teams)
    app.cli.add_command(keys)
