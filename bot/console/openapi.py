"""The console API's OpenAPI 3.1 document, served at ``/console/api/openapi.json``.

Built from the console application's own route table, so every route is in it and none that
is not: one operation per method and path (``{session_key:.+}`` becomes ``{session_key}``), its
summary and description from the handler's docstring, a JSON request body on writes, and the
errors every console call can answer. Request and response bodies are described in each
handler's docstring (and in ``docs/console.md``), not as schemas.

Authentication is the console's session cookie; every state-changing call also needs the
``X-Switchboard-CSRF`` header (:mod:`bot.web_security`). Specification:
https://spec.openapis.org/oas/v3.1.0
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from bot.auth import SESSION_COOKIE

PREFIX = "/console"
"""Where the console application is mounted."""

_PARAM = re.compile(r"\{(\w+):[^}]+\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_OPEN = frozenset({"/api/login", "/api/openapi.json"})
"""Calls that need no session."""

_ERRORS: dict[str, Any] = {
    "400": {"description": 'Malformed request: a JSON body `{"error": ...}` says why'},
    "401": {"description": "Not signed in (or the session expired)"},
    "403": {"description": "The account's role does not allow this, or the CSRF check failed"},
    "404": {"description": "No such conversation, agent, team or record"},
    "409": {"description": "Conflict: another agent acted first, or a name is taken"},
}


def _doc(handler: Any) -> tuple[str, str]:
    text = inspect.getdoc(handler) or ""
    summary, _, rest = text.partition("\n")
    return summary.strip(), rest.strip()


def console_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (the console sub-application).

    Args:
        app: the application :func:`bot.console.routes.console_app` built, mounted at
            :data:`PREFIX` or not.

    Returns:
        An OpenAPI 3.1 document (a JSON-serializable dict) with one path per ``/api/...``
        route, under :data:`PREFIX`.
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        raw = info.get("formatter") or info.get("path")
        if not isinstance(raw, str):
            continue
        raw = raw.removeprefix(PREFIX)  # mounted, the application's paths carry its prefix
        if route.method not in _METHODS or not raw.startswith("/api/"):
            continue
        path = _PARAM.sub(r"{\1}", raw)
        summary, description = _doc(route.handler)
        operation: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower())}",
            "summary": summary or f"{route.method} {path}",
            "responses": {"200": {"description": "Done: a JSON body"}, **_ERRORS},
        }
        if description:
            operation["description"] = description
        params = re.findall(r"\{(\w+)\}", path)
        if params:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if route.method != "GET":
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        if raw in _OPEN:
            operation["security"] = []
        elif route.method != "GET":
            operation["security"] = [{"session": [], "csrf": []}]
        paths.setdefault(PREFIX + path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard console API",
            "version": "1",
            "description": "The human agents' console. Roles: admin, agent, viewer; "
            "each call checks the role on the server.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-Switchboard-CSRF"},
            }
        },
        "security": [{"session": []}],
    }


async def openapi_json(request: web.Request) -> web.StreamResponse:
    """The console API's OpenAPI document (no session needed)."""
    return web.json_response(console_openapi(request.app))
