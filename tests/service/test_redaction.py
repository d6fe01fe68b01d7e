"""The redaction filter (service/redaction.py): no form of a key survives into a log line.

The gunicorn tests (tests/app/test_keys_processes.py) send keys to a real server and
read every line it wrote; these tests pin each form the filter masks.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
from urllib.parse import quote

import pytest

from service.logs import logging_config
from service.redaction import redact
from store.apikeys import new_secret

KEY = new_secret()


def forms(secret: str) -> list[str]:
    """Ways a client may send a key that could end up in a line."""
    return [
        secret,
        base64.b64encode(f"{secret}:".encode()).decode(),
        base64.b64encode(f":{secret}".encode()).decode(),
        base64.b64encode(f"someone:{secret}".encode()).decode(),
        base64.urlsafe_b64encode(f"xy{secret}".encode()).decode().rstrip("="),
        quote(secret, safe=""),
        secret.replace("_", "%5F"),
        secret.replace("_", "%5f"),
    ]


def leaked(text: str, secret: str = KEY) -> list[str]:
    pieces = [secret, secret[12:], secret[4:]]
    pieces += [base64.b64encode(f"{secret}:".encode()).decode()[8:]]
    return [piece for piece in pieces if piece in text]


@pytest.mark.parametrize("form", forms(KEY))
@pytest.mark.parametrize(
    "line",
    [
        "Invalid request from ip=127.0.0.1: Invalid HTTP Header: 'Authorization Bearer {}'",
        "Invalid request from ip=127.0.0.1: Invalid HTTP Header: 'Authorization: Basic {}'",
        "Invalid Request Line 'GET /v1/segment?writeKey={} HTTP/1.1'",
        'body: {{"writeKey": "{}"}}',
        "{}",
    ],
)
def test_every_form_of_a_key_is_masked(form: str, line: str) -> None:
    masked = redact(line.format(form))
    assert leaked(masked) == []
    assert "redacted" in masked


def test_a_key_cut_short_is_masked_too() -> None:
    assert leaked(redact(f"value {KEY[:30]}... was cut"), KEY[:30]) == []


def test_lines_without_a_key_are_kept_as_they_are() -> None:
    for line in [
        "key created: team=3 key=41",
        "database unavailable: OperationalError",
        "GET /api/v1/customers?limit=50&cursor=WyJjdXN0b21lcnMiLCJkZXNjIiwiMjAyNC0wMy0wMVQxMjowMDowMCJd",
        "a basic fact",
    ]:
        assert redact(line) == line


def record_through_the_handler(emit: object) -> dict[str, object]:
    """What the configured handler writes for a record logged by `emit(logger)`."""
    config = logging_config("DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    factories = [config["filters"][name]["()"] for name in config["handlers"]["stderr"]["filters"]]
    assert "service.redaction.RedactSecrets" in factories
    for factory in factories:  # every filter of the one handler, in its order
        module, _, name = factory.rpartition(".")
        handler.addFilter(getattr(importlib.import_module(module), name)())
    from pythonjsonlogger.json import JsonFormatter

    handler.setFormatter(JsonFormatter("%(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_every_handler_of_the_config_filters() -> None:
    config = logging_config()
    assert all("redact_secrets" in handler["filters"] for handler in config["handlers"].values())
    for logger in ("gunicorn.error", "gunicorn.access"):
        assert config["loggers"][logger]["handlers"] == ["stderr"]
    assert config["root"]["handlers"] == ["stderr"]


def test_arguments_tracebacks_and_extra_fields_are_masked() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError(f"bad key {KEY}")
        except ValueError:
            logger.exception("failed for %s", KEY, extra={"header": f"Bearer {KEY}"})

    written = record_through_the_handler(emit)
    assert leaked(json.dumps(written)) == []
    assert "failed for tlk_[redacted]" == written["message"]
    assert "ValueError: bad key tlk_[redacted]" in str(written["exc_info"])
    assert written["header"] == "Bearer tlk_[redacted]"
