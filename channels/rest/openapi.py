"""The OpenAPI 3.1 document of the REST API, generated from the wire models.

Served at ``/api/v1/openapi.json``. Schemas come from the pydantic models in
:mod:`channels.rest.translate` (``model_json_schema``), so the document cannot drift from the
validation the server applies. Specification: https://spec.openapis.org/oas/v3.1.0
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from channels.rest.translate import ErrorBody, MessageAccepted, MessagePage, PostMessage

MAX_WAIT_S = 30.0
"""Upper bound of the ``wait`` long-poll parameter (seconds)."""

_MODELS: tuple[type[BaseModel], ...] = (PostMessage, MessageAccepted, MessagePage, ErrorBody)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def openapi_document(*, server_url: str | None = None, auth: bool = True) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document.

    Args:
        server_url: the hub's public URL for ``servers`` (omitted when None).
        auth: whether to declare the Bearer API-key scheme as required.

    Returns:
        The document as a JSON-serializable dict.
    """
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    conversation = {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "description": "Your id of the conversation (1..256 characters).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    }
    errors = {
        "401": _json(ErrorBody, "Missing or wrong API key."),
        "503": _json(ErrorBody, "Shutting down or storage unavailable; retry after Retry-After."),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard REST channel",
            "version": "1",
            "description": (
                "Post customer messages and read the conversation (bot answers with citations, "
                "human agents' replies, notices). Answers are asynchronous: poll GET with "
                "`after` and `wait`."
            ),
        },
        "paths": {
            "/api/v1/conversations/{conversation_id}/messages": {
                "parameters": [conversation],
                "post": {
                    "operationId": "postMessage",
                    "summary": "Send a customer message",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(PostMessage)}},
                    },
                    "responses": {
                        "202": _json(MessageAccepted, "Stored and queued (or a duplicate)."),
                        "400": _json(ErrorBody, "Malformed JSON or schema violation."),
                        "413": _json(ErrorBody, "Text or body too large."),
                        **errors,
                    },
                },
                "get": {
                    "operationId": "listMessages",
                    "summary": "Read messages, optionally waiting for new ones",
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "Only messages with seq greater than this.",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": (
                                "Seconds to wait for a newer message when there is none "
                                f"(long poll, at most {MAX_WAIT_S:g})."
                            ),
                            "schema": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": MAX_WAIT_S,
                                "default": 0,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(MessagePage, "The conversation's mode and messages."),
                        "400": _json(ErrorBody, "Invalid query parameter."),
                        "404": _json(ErrorBody, "Unknown conversation."),
                        **errors,
                    },
                },
            }
        },
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."}
        }
        doc["security"] = [{"apiKey": []}]
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
