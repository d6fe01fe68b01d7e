"""No secret in any log line: a logging filter that masks our API keys wherever they appear.

Handlers log ids and counts, never a key, but a client chooses what it sends, and some
of it reaches a log verbatim: gunicorn logs a malformed header line as it came
(`Invalid HTTP Header: 'Authorization Bearer tlk_...'`), a request line with its query
string, or a library puts a value in an exception message. SPEC §6: no key is ever
logged, whatever a client sends. So the one handler every process logs through
(service/logs.py) runs this filter on every record, gunicorn's included.

What is masked:
- our key format, `tlk_` then letters and digits (also percent-encoded, `tlk%5F...`),
  whole or cut short, as `tlk_[redacted]`;
- the credentials of a Basic header (`Basic <base64>`), whatever they hold;
- any base64 run that decodes to something holding `tlk_` (a key sent as Basic with a
  user name in front, or base64 anywhere else).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

REDACTED_KEY = "tlk_[redacted]"

_KEY = re.compile(r"tlk(?:_|%5[fF])[A-Za-z0-9]*")
_BASIC = re.compile(r"(?i)(\bbasic[\s:='\"]+)[A-Za-z0-9+/=_\-]{8,}")
# Base64 of "tlk_" + 32 characters is 48 characters; shorter runs cannot hold a key's
# 190 bits. Runs this long are rare in our log lines, so decoding them is cheap.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{20,}={0,2}")


def _holds_key(run: str) -> bool:
    """Whether some alignment of this base64 run decodes to bytes holding `tlk_`."""
    text = run.rstrip("=").replace("-", "+").replace("_", "/")
    for start in range(4):
        chunk = text[start:]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            if b"tlk_" in base64.b64decode(chunk, validate=True):
                return True
        except (binascii.Error, ValueError):
            continue
    return False


def redact(text: str) -> str:
    """`text` with every API key, Basic credential and base64-encoded key masked."""
    if "tlk" in text:
        text = _KEY.sub(REDACTED_KEY, text)
    lowered = text.lower()
    if "basic" in lowered:
        text = _BASIC.sub(r"\1[redacted]", text)
    if len(text) >= 20:
        text = _BASE64_RUN.sub(lambda m: "[redacted]" if _holds_key(m.group(0)) else m.group(0), text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Masks keys in a record's message, arguments, traceback, stack and extra fields.

    The message is formatted here (msg % args), masked, and stored with no arguments,
    so no formatter downstream can put a key back. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, masked
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, _redact_value(value))
        return True


_STANDARD = frozenset(vars(logging.makeLogRecord({})))
