"""For every header value, path id and query string, on every route: never a 500 (issue 13).

Beside the body fuzzing of tests/app/test_ingest_properties.py, hypothesis here varies
what is around the body: the `Authorization` value (a real key of each scope, or any
text, including what a server makes of UTF-8 bytes read as latin-1), other headers,
the path's ids (any text, Arabic-Indic and superscript digits included) and the query
string (the parameters the routes read, with any values, and unknown ones). Whatever
comes back is a JSON answer in the one envelope, with a status below 500.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.test_auth import OPEN_ROUTES
from tests.conftest import TeamKeys

LOOKALIKE_DIGITS = ["²", "٣", "۳", "३", "①", "¹", "𝟑", "0", "9" * 30, "-1", "1.5", "1e3", " 1", "%00"]
QUERY_NAMES = ["limit", "cursor", "order", "type", "q", "email", "user_id", "since", "until", "before", "x"]
ODD = ["\x00", "\ufeff", "\u202e", "é", "\ud7ff", "[", "{", "%", "&", "=", "\\", '"']

latin1_text = st.text(st.characters(max_codepoint=255) | st.sampled_from(ODD), max_size=40)
utf8_as_latin1 = st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1"))
# A header value cannot hold a line break (HTTP/1.1 ends the header there).
header_values = (latin1_text | utf8_as_latin1).map(lambda v: v.replace("\r", " ").replace("\n", " "))
path_ids = st.sampled_from(LOOKALIKE_DIGITS) | st.text(max_size=30).filter(lambda t: t not in ("", ".", ".."))
# Any character a URL can carry: UTF-8 has no lone surrogate, so no client can send one
# (the test client itself fails to encode it).
query_values = st.sampled_from(LOOKALIKE_DIGITS) | st.text(
    st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=200
)
queries = st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=10), query_values), max_size=4)


def routes(app: Flask) -> list[tuple[str, str, list[str]]]:
    """(method, rule, its path arguments) of every route but static files."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule == "/static/<path:filename>":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, rule.rule, sorted(rule.arguments)))
    return found


def fill(rule: str, arguments: dict[str, str]) -> str:
    path = rule
    for name, value in arguments.items():
        quoted = quote(value, safe="")
        path = path.replace(f"<{name}>", quoted).replace(f"<path:{name}>", quoted)
    return path


BODIES: list[Any] = [
    {"type": "track", "userId": "u1", "event": "E", "messageId": "m-props"},
    {"batch": [{"type": "track", "userId": "u1", "event": "E"}]},
    {"name": "fuzzed", "scopes": ["ingest"]},
    {"grace_seconds": 0},
    {},
]


@st.composite
def requests_to_any_route(draw: st.DrawFn, app: Flask) -> dict[str, Any]:
    method, rule, arguments = draw(st.sampled_from(routes(app)))
    path = fill(rule, {name: draw(path_ids) for name in arguments})
    who = draw(st.sampled_from(["admin", "read", "ingest", "junk", "none"]))
    scheme = draw(st.sampled_from(["Bearer", "Basic", "bearer", "Token", ""]))
    extra = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "Content-Type",
                    "Content-Encoding",
                    "X-Forwarded-For",
                    "X-Forwarded-Host",
                    "Accept",
                    "Cookie",
                ]
            ),
            header_values,
            max_size=3,
        )
    )
    return {
        "method": method,
        "path": path,
        "rule": rule,
        "who": who,
        "scheme": scheme,
        "junk": draw(header_values),
        "headers": extra,
        "query": draw(queries),
        "body": draw(st.sampled_from(BODIES)) if method == "POST" else None,
    }


def test_every_route_is_drawn(app: Flask) -> None:
    rules = {rule for _, rule, _ in routes(app)}
    assert {"/v1/batch", "/api/v1/customers/<path:customer_id>/feed", "/api/v1/keys/<key_id>"} <= rules
    assert OPEN_ROUTES - {"/static/<path:filename>"} <= rules


def test_any_header_path_id_or_query_gets_a_clear_answer_never_a_500(app: Flask, team: TeamKeys) -> None:
    client = app.test_client()
    secrets = {"admin": team.admin, "read": team.read, "ingest": team.ingest}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests_to_any_route(app))
    def check(drawn: dict[str, Any]) -> None:
        headers = dict(drawn["headers"])
        if drawn["who"] in secrets:
            secret = secrets[drawn["who"]]
            headers["Authorization"] = (
                TeamKeys.basic(secret)["Authorization"] if drawn["scheme"] == "Basic" else f"Bearer {secret}"
            )
        elif drawn["who"] == "junk":
            headers["Authorization"] = f"{drawn['scheme']} {drawn['junk']}"
        if drawn["body"] is not None:
            headers.setdefault("Content-Type", "application/json")
        response = client.open(
            drawn["path"],
            method=drawn["method"],
            query_string=drawn["query"],
            headers=headers,
            json=drawn["body"] if "Content-Type" not in drawn["headers"] else None,
            data=None if "Content-Type" not in drawn["headers"] else b'{"type": "track"}',
        )
        where = f"{drawn['method']} {drawn['path']} {drawn['query']!r}"
        assert response.status_code < 500, (where, response.get_data(as_text=True)[:500])
        # The console's pages answer people, in HTML (docs/console.md); the API answers JSON.
        if response.status_code >= 400 and not drawn["path"].startswith("/console"):
            body = response.get_json(silent=True)
            assert isinstance(body, dict) and {"message", "code"} <= set(body), (where, response.data[:300])

    check()


DEEP_CURSOR = base64.urlsafe_b64encode(b"[" * 1500).decode()


@pytest.mark.parametrize("path", ["/api/v1/customers", "/api/v1/customers/1/feed", "/api/v1/groups/g1"])
def test_a_deep_cursor_on_a_read_route_is_400(client: FlaskClient, team: TeamKeys, path: str) -> None:
    response = client.get(path, query_string={"cursor": DEEP_CURSOR}, headers=team.bearer(team.read))
    assert response.status_code == 400
