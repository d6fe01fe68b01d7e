"""The agents' console under `/console`: server-rendered pages over the read API (SPEC §10).

Jinja2 templates and a little JavaScript of our own (`static/console.js`), nothing from
another host. See docs/console.md.
"""

from __future__ import annotations

from flask import Flask

from app.console import present, session
from app.console.views import bp
from service.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    session.configure(app, settings)
    present.init_app(app)
    app.register_blueprint(bp)
