"""A fake HubSpot CRM v3 API on loopback that records every request.

Serves the documented search endpoints
(https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/search/post-crm-v3-objects-contacts-search):
``POST /crm/v3/objects/{contacts|companies}/search`` with ``filterGroups`` (groups ORed,
filters inside a group ANDed; operators ``EQ`` and ``HAS_PROPERTY``), ``properties`` and
``limit``; answers ``{"total", "results": [{"id", "properties", "createdAt", "updatedAt",
"archived"}]}`` with the requested properties plus ``hs_object_id``, ``createdate`` and
``lastmodifieddate``. A wrong token gets HubSpot's 401 body (``category:
INVALID_AUTHENTICATION``). The real ``hubspot.HubSpot`` client is pointed at ``base_url``
(``host=``). ``GET /crm/v3/owners/{ownerId}`` answers an owner seeded as object type
``owners`` (``firstName``, ``lastName``, ``email``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.crm_base import FakeCrmServer

_AT = "2026-01-05T10:00:00.000Z"


@dataclass
class FakeHubSpot(FakeCrmServer):
    """The fake (an async context manager).

    Attributes:
        objects: records by object type (``contacts``, ``companies``) then id: their
            properties (tests seed them with :meth:`add`).
    """

    objects: dict[str, dict[str, dict[str, str]]] = field(
        default_factory=lambda: {"contacts": {}, "companies": {}, "owners": {}}
    )
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(101))

    def add(self, object_type: str, **properties: str) -> str:
        """Seed a record; returns its id (also its ``hs_object_id``)."""
        record_id = str(next(self._ids))
        self.objects[object_type][record_id] = {**properties, "hs_object_id": record_id}
        return record_id

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/crm/v3/objects/{object_type}/search", self._search)
        app.router.add_get("/crm/v3/owners/{owner_id}", self._owner)

    def unauthorized(self) -> web.Response:
        return web.json_response(
            {
                "status": "error",
                "message": "Authentication credentials not found.",
                "correlationId": "00000000-0000-0000-0000-000000000401",
                "category": "INVALID_AUTHENTICATION",
            },
            status=401,
        )

    async def _owner(self, request: web.Request) -> web.Response:
        failed = await self.guard(request)
        if failed is not None:
            return failed
        owner = self.objects["owners"].get(request.match_info["owner_id"])
        if owner is None:
            return web.json_response(
                {"status": "error", "message": "Owner not found", "category": "OBJECT_NOT_FOUND"},
                status=404,
            )
        return web.json_response(
            {
                "id": owner["hs_object_id"],
                "email": owner.get("email"),
                "firstName": owner.get("firstName"),
                "lastName": owner.get("lastName"),
                "userId": 1,
                "createdAt": _AT,
                "updatedAt": _AT,
                "archived": False,
            }
        )

    async def _search(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self.guard(request, body)
        if failed is not None:
            return failed
        records = self.objects.get(request.match_info["object_type"])
        if records is None:
            return web.json_response({"status": "error", "message": "unknown object"}, status=404)
        groups = body.get("filterGroups") or []
        try:
            hits = [
                (rid, props)
                for rid, props in records.items()
                if not groups or any(_matches(props, g.get("filters") or []) for g in groups)
            ]
        except ValueError as exc:
            return web.json_response(
                {"status": "error", "message": str(exc), "category": "VALIDATION_ERROR"},
                status=400,
            )
        wanted = body.get("properties") or []
        results = [
            {
                "id": rid,
                "properties": {
                    **{p: props.get(p) for p in wanted},
                    "hs_object_id": rid,
                    "createdate": _AT,
                    "lastmodifieddate": _AT,
                },
                "createdAt": _AT,
                "updatedAt": _AT,
                "archived": False,
            }
            for rid, props in hits[: int(body.get("limit") or 10)]
        ]
        return web.json_response({"total": len(hits), "results": results})


def _matches(props: dict[str, str], filters: list[dict[str, Any]]) -> bool:
    for f in filters:
        op = f.get("operator")
        value = props.get(f.get("propertyName", ""))
        if op == "EQ":
            # HubSpot compares strings case-insensitively.
            if value is None or value.lower() != str(f.get("value", "")).lower():
                return False
        elif op == "HAS_PROPERTY":
            if value is None:
                return False
        else:
            raise ValueError(f"operator {op!r} is not supported by the fake")
    return True
