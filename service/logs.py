"""Structured logs for every process (web and worker): one JSON object per line.

The web (gunicorn's `logconfig_dict`, app/serving/gunicorn_config.py) and the fold worker
(`python -m workers`) both use `logging_config()`, so every line has the same fields:
`time`, `level`, `logger`, `process`, `message`, plus whatever a call passes as `extra`
(e.g. `team_id`). Library loggers (gunicorn's, RQ's) go through the same handler: RQ adds
its own plain-text handler only when none is configured, and its colour codes are
stripped here. Filters on the handler are listed in `FILTERS`: add one there to apply
it to every line of every process.

Nothing logs a request body or a key: handlers log ids, counts and error class names.
And whatever a client sends, the one handler masks keys in every record that reaches
it (service/redaction.py), gunicorn's own lines included.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

FIELDS = ["asctime", "levelname", "name", "process", "message"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PlainText(logging.Filter):
    """Removes terminal colour codes (RQ colours queue names and job ids on a tty)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), None
        return True


# name -> dictConfig filter entry; applied to every line, in this order.
FILTERS: dict[str, dict[str, Any]] = {
    "plain_text": {"()": "service.logs.PlainText"},
    # Last, so it sees the final text: no key reaches a line, whatever a client sends.
    "redact_secrets": {"()": "service.redaction.RedactSecrets"},
}


def logging_config(level: str | None = None) -> dict[str, Any]:
    """A dictConfig for the root logger and gunicorn's own loggers, in JSON."""
    level = level or os.environ.get("LOG_LEVEL", "INFO").upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "filters": list(FILTERS),
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": dict(FILTERS),
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
    """Apply `logging_config()` to this process (the worker; gunicorn applies it itself)."""
    import logging.config

    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
