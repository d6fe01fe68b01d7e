"""Structured logs for every process (web and worker): one JSON object per line.

Nothing logs a request body or a key: handlers log ids, counts and error class names.
And whatever a client sends, the one handler masks keys in every record that reaches
it (store/redaction.py), gunicorn's own lines included.
"""

from __future__ import annotations

import os
from typing import Any

FIELDS = ["asctime", "levelname", "name", "process", "message"]


def logging_config(level: str | None = None) -> dict[str, Any]:
    """A dictConfig for the root logger and gunicorn's own loggers, in JSON."""
    level = level or os.environ.get("LOG_LEVEL", "INFO").upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "filters": ["redact_secrets"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact_secrets": {"()": "store.redaction.RedactSecrets"}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": FIELDS,
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }


def configure_logging(level: str | None = None) -> None:
    import logging
    import logging.config

    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
