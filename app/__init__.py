"""The web side: `create_app()` builds the Flask app and wires each part in order."""

from __future__ import annotations

from typing import Any

from flask import Flask

from service.settings import Settings


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. Settings come from the environment unless `config["SETTINGS"]` is given.

    They are read here, once, and reach every part through `app.resources` (no part reads
    the environment again); `config` is otherwise Flask's own (`TESTING`).
    """
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(config or {})
    settings: Settings = app.config.get("SETTINGS") or Settings.from_env()

    from app import console, errors, openapi, resources
    from app.admin import fold_failures, keys, keys_cli, retention, timeline_cli
    from app.imports import cli as import_cli
    from app.ingest import debugger, lane, ratelimit
    from app.read_api import customers, feed, groups, me, stream, visits
    from app.serving import health, metrics

    resources.init_app(app, settings)
    ratelimit.init_app(app, settings)
    errors.init_app(app)
    metrics.init_app(app)
    health.init_app(app)
    lane.init_app(app)
    customers.init_app(app)
    feed.init_app(app)
    stream.init_app(app)
    groups.init_app(app)
    keys.init_app(app)
    debugger.init_app(app)
    fold_failures.init_app(app)
    retention.init_app(app)
    me.init_app(app)
    visits.init_app(app)
    openapi.init_app(app)
    console.init_app(app, settings)
    keys_cli.init_app(app)
    import_cli.init_app(app)
    timeline_cli.init_app(app)
    return app
