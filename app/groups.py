"""Placeholder blueprint: filled in by its issue's work."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("groups", __name__, url_prefix="/api/v1")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
