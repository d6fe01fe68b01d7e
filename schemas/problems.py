"""marshmallow's error messages as the API reports them: flat field paths and one sentence.

marshmallow nests its messages the way the data nests (`{"scopes": {0: ["..."]}}`).
Every 4xx that comes from a schema (a query string, a JSON body, a Segment event)
names each bad field by its dotted path (`scopes.0`) and says what to fix, in one
sentence, from here. No Flask: `schemas/segment.py` uses it too.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError


def flatten_errors(messages: Any, *, root: str = "_schema") -> dict[str, list[str]]:
    """`{"a": {"0": ["x"]}, "b": ["y"]}` -> `{"a.0": ["x"], "b": ["y"]}`; a bare list goes under `root`."""
    if not isinstance(messages, dict):
        messages = {root: messages}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        if isinstance(value, dict):
            for sub, problems in flatten_errors(value).items():
                flat[f"{key}.{sub}"] = problems
        elif isinstance(value, list):
            flat[str(key)] = [str(problem) for problem in value]
        else:
            flat[str(key)] = [str(value)]
    return flat


def string_keys(value: Any) -> Any:
    """marshmallow's messages with every key a string (list indexes are ints), for JSON."""
    if isinstance(value, dict):
        return {str(key): string_keys(item) for key, item in value.items()}
    return value


def describe(flat: dict[str, list[str]], *, most: int | None = None) -> str:
    """`"name: Missing data for required field.; scopes.0: Must be one of: ..."` (the first `most`)."""
    parts = [f"{path}: {' '.join(problems)}" for path, problems in flat.items()]
    return "; ".join(parts if most is None else parts[:most])


def error_messages(error: ValidationError, *, root: str) -> dict[str, Any]:
    """The error's messages as a dict with string keys; a bare list goes under `root`."""
    messages = error.messages if isinstance(error.messages, dict) else {root: error.messages}
    found: dict[str, Any] = string_keys(messages)
    return found
