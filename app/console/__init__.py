"""The agents' console under `/console`: server-rendered pages over the read API (SPEC §10).

Jinja2 templates and a little JavaScript of our own (`static/console.js`), nothing from
another host. See docs/console.md.
"""

from __future__ import annotations

from flask import Flask

from app.console import live, present, session, sign_in, throttle  # noqa: F401 (live, sign_in: their routes join bp)
from app.console.views import bp, front_door, group_url
from service.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    session.configure(app, settings)
    throttle.configure(app)
    present.init_app(app)
    app.jinja_env.globals["group_url"] = group_url
    app.register_blueprint(bp)
    # `/` for people: to the console. Named under "console." so that it is the console's
    # (its headers, no sign-in needed) and not an API route (app/openapi.py).
    app.add_url_rule("/", endpoint="console.front_door", view_func=front_door, methods=["GET"])
