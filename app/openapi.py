"""`GET /api/v1/openapi.json`: an OpenAPI 3 document of every route of the app.

The document is collected, not written: at the first request it walks `app.url_map`, so
a route any blueprint adds is in it. Each view documents itself with a YAML block after
`---` in its docstring (the apispec convention), keyed by HTTP method; schema names in
it are marshmallow classes (`schemas/api.py` and any other schema module), turned into
JSON Schema by apispec's marshmallow plugin, so the document and the code share one
definition. `FlaskRoutes` below does what apispec-webframeworks' FlaskPlugin does, and
also handles a view served at several URLs (`/v1/batch` and `/v1/import`).

The answers every keyed route may give are declared once, in `RESPONSES` (components,
named by the views: `400: BadRequest`), and a keyed route says only `x-key: SCOPE` (the
scope its key needs, or `any`): the builder expands it to the two ways of sending a key
(`security`) and the 401, 403 (not for `any`), 429 and 503 answers, so no docstring
repeats them.

A view without YAML still appears, with its docstring's first line and `x-undocumented`;
a docstring that does not parse appears with `x-doc-error` (and a warning in the log)
rather than breaking the whole document. tests/app/test_openapi.py fails on either.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Rule

from schemas.api import COMPONENTS
from schemas.keys import SCOPES

log = logging.getLogger(__name__)

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>[^:<>]+):)?(?P<name>[^<>]+)>")
_INTEGER_CONVERTERS = {"int"}

_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[str, dict[str, Any]] = {
    "BadRequest": _error_response("A query argument or the body is not valid; `errors` says which."),
    "Unauthorized": _error_response(
        "No API key, or an unknown, expired or revoked one.",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "Forbidden": _error_response("The key lacks the scope this route needs."),
    "NotFound": _error_response("No such thing in the key's team (another team's ids answer this too)."),
    "Unavailable": _error_response("Storage is unavailable; retry.", {"Retry-After": _RETRY_AFTER}),
    "TooManyRequests": _error_response(
        "This key is over its rate limit (API_RATE_LIMIT); retry after Retry-After seconds.",
        {"Retry-After": _RETRY_AFTER},
    ),
    "PayloadTooLarge": _error_response("The body is over 16 KiB."),
    "Merged": {
        "description": "The customer was merged into another; `Location` is the same request for it.",
        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Merged"}}},
    },
}

# What `x-key: SCOPE` in an operation stands for: a key sent either way, and the answers
# of `app.auth.authenticate` (no key or a bad one, a missing scope, over the key's rate
# limit) and of storage being down. `any`: a route every key may call (no 403).
KEY_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"basicAuth": []}]
KEY_RESPONSES = {401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests", 503: "Unavailable"}
ANY_SCOPE = "any"


def expand_key(operation: dict[str, Any]) -> None:
    """Replace an operation's `x-key: SCOPE` with its security and its keyed answers."""
    scope = operation.pop("x-key", None)
    if scope is None:
        return
    if scope != ANY_SCOPE and scope not in SCOPES:
        raise ValueError(f"x-key: {scope!r} is neither a key scope ({', '.join(SCOPES)}) nor {ANY_SCOPE!r}")
    operation.setdefault("security", [dict(way) for way in KEY_SECURITY])
    responses = operation.setdefault("responses", {})
    for status, name in KEY_RESPONSES.items():
        if not (status == 403 and scope == ANY_SCOPE):
            responses.setdefault(status, name)
    operation["responses"] = dict(sorted(responses.items(), key=lambda item: str(item[0])))


PARAMETERS: dict[str, dict[str, Any]] = {
    "CustomerId": {
        "in": "path",
        "name": "customer_id",
        "required": True,
        "description": "A customer id as this API returns it, or `user_id:X`, `email:X` or "
        "`anonymous_id:X` (URL-encoded), resolved as /customers/lookup resolves it.",
        "schema": {"type": "string", "pattern": "^([0-9]{1,18}|(user_id|email|anonymous_id):.+)$"},
    },
    # A keyset-paged list's two arguments (keys, the audit list, the set-aside events).
    "Limit": {
        "in": "query",
        "name": "limit",
        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    },
    "Cursor": {
        "in": "query",
        "name": "cursor",
        "schema": {"type": "string"},
        "description": "next_cursor of the previous page",
    },
}


def openapi_path(rule: str) -> str:
    """`/customers/<customer_id>` -> `/customers/{customer_id}`."""
    return _RULE_ARGUMENT.sub(lambda match: "{" + match["name"] + "}", rule)


class FlaskRoutes(BasePlugin):
    """apispec path helper for one werkzeug Rule and its view function."""

    def path_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        *,
        rule: Rule | None = None,
        view: Any = None,
        **kwargs: Any,
    ) -> str | None:
        if rule is None or operations is None:
            return path
        methods = [method for method in HTTP_METHODS if method.upper() in (rule.methods or ())]
        documented = _operations_of(view)
        for method in methods:
            operation = documented.get(method) or _undocumented(view)
            expand_key(operation)
            _declare_path_parameters(rule, operation)
            operations[method] = operation
        return openapi_path(rule.rule)


def _operations_of(view: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    view_class = getattr(view, "view_class", None)
    if view_class is not None:  # a MethodView: one docstring per method
        for method in HTTP_METHODS:
            handler = getattr(view_class, method, None)
            if handler is not None:
                found.update(load_operations_from_docstring(handler.__doc__ or ""))
    found.update(load_operations_from_docstring(view.__doc__ or ""))
    return {method: operation for method, operation in found.items() if method in HTTP_METHODS}


def is_api_endpoint(endpoint: str) -> bool:
    """Whether a route is part of the JSON API: the console's HTML pages and static files are not."""
    return endpoint != "static" and not endpoint.startswith("console.")


def _undocumented(view: Any) -> dict[str, Any]:
    first_line = (view.__doc__ or "").strip().splitlines()
    return {
        "summary": first_line[0] if first_line else view.__name__,
        "x-undocumented": True,
        "responses": {"default": {"description": "Not documented yet."}},
    }


def _declare_path_parameters(rule: Rule, operation: dict[str, Any]) -> None:
    """OpenAPI requires every `{name}` of a path to be declared; declare what the view did not."""
    declared = set()
    for parameter in operation.get("parameters", []):
        if isinstance(parameter, str):  # a component's name
            parameter = PARAMETERS.get(parameter, {})
        if parameter.get("in") == "path":
            declared.add(parameter.get("name"))
    for match in _RULE_ARGUMENT.finditer(rule.rule):
        if match["name"] not in declared:
            kind = "integer" if match["converter"] in _INTEGER_CONVERTERS else "string"
            operation.setdefault("parameters", []).append(
                {"in": "path", "name": match["name"], "required": True, "schema": {"type": kind}}
            )


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of `app`, from its routes and their docstrings."""
    spec = APISpec(
        title="segment-timeline",
        version="1",
        openapi_version="3.0.3",
        plugins=[FlaskRoutes(), MarshmallowPlugin()],
        info={
            "description": "A Segment destination: ingest (SPEC §2), the agents' read API "
            "(docs/read-api.md) and API keys. Authenticate with `Authorization: Bearer KEY` "
            "or Basic base64(KEY:)."
        },
    )
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("basicAuth", {"type": "http", "scheme": "basic"})
    for name, schema in COMPONENTS.items():
        spec.components.schema(name, schema=schema)
    for name, response in RESPONSES.items():
        spec.components.response(name, response)
    for name, parameter in PARAMETERS.items():
        spec.components.parameter(name, parameter["in"], parameter)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not is_api_endpoint(rule.endpoint):
            continue
        view = app.view_functions[rule.endpoint]
        try:
            spec.path(rule=rule, view=view)
        except Exception as error:  # one broken docstring must not take the document down
            log.warning("OpenAPI: cannot document %s (%s): %s", rule.rule, rule.endpoint, error)
            operation = {**_undocumented(view), "x-doc-error": f"{type(error).__name__}: {error}"}
            for method in HTTP_METHODS:
                if method.upper() in (rule.methods or ()):
                    single = {**operation}
                    _declare_path_parameters(rule, single)
                    spec.path(path=openapi_path(rule.rule), operations={method: single})
    document: dict[str, Any] = spec.to_dict()
    return document


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """This API's OpenAPI 3 document.
    ---
    get:
      operationId: getOpenApiDocument
      summary: The OpenAPI 3 document of every route
      description: Public, no key needed; it holds no team's data.
      tags: [meta]
      security: []
      responses:
        200:
          description: The document.
          content:
            application/json:
              schema: {type: object}
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    document = app.extensions.get("openapi_document")
    if document is None:
        document = app.extensions["openapi_document"] = build_spec(app)
    return jsonify(document)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
