"""Admin REST API of data-subject requests: export and erase one customer.

Both routes need ``Authorization: Bearer KEY`` with a key of ``settings.admin_api_keys``
(:func:`bot.auth.require_admin_key`; 403 when none is configured) and a JSON body naming the
customer: ``{"channel": C, "user_id": ID}`` or ``{"email": E}``.

- ``POST /api/v1/admin/privacy/export`` → 200, the export document of
  :meth:`bot.subjects.SubjectRequests.export` (``subject``, ``exported_at``, ``sessions``,
  ``tables``: every row found, per table; ``queued_lane_state``: messages waiting in lanes;
  ``knowledge_base``: curated answers, documents and uploads naming them).
- ``POST /api/v1/admin/privacy/erase`` → 200 ``{"request_id", "sessions", "deleted",
  "anonymized", "audit_erased", "elsewhere"}`` (``elsewhere``: the lanes' and the knowledge
  base's part). The body must also hold ``"confirm": true``.

Both are audited (``privacy.export``, ``privacy.erase``) with the actor ``admin-api``. Errors
are ``{"error": message}`` with 400 (no customer named, no confirmation), 401, 403, 413, 415 or
503 (a store that is not SQL, a part that cannot be reached, or a turn answering the customer
that did not end in time: nothing was erased after that step). Registered through the
``switchboard.http`` entry point.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from bot.auth import require_admin_key
from bot.errors import PayloadInvalid, PayloadTooLarge
from bot.payload import parse_json_model
from bot.store.engine import json_dumps
from bot.store.subjects import Subject
from bot.subjects import SubjectRequests

if TYPE_CHECKING:
    from bot.hub import Hub

log = logging.getLogger(__name__)

PREFIX: Final = "/api/v1/admin/privacy"
ACTOR: Final = "admin-api"
"""Audit-log actor of requests made through this API."""


class SubjectRequest(BaseModel):
    """The body of both routes: who (``channel`` + ``user_id``, or ``email``), and ``confirm``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str | None = None
    user_id: str | None = None
    email: str | None = None
    confirm: bool = False


class AdminPrivacy:
    """The route handlers (see the module docstring)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._keys = [k.get_secret_value().encode() for k in hub.settings.admin_api_keys]

    async def _subject(
        self, request: web.Request
    ) -> tuple[SubjectRequests, Subject, SubjectRequest]:
        require_admin_key(request, self._keys)
        requests = self.hub.subject_requests()
        if request.content_type != "application/json":
            raise PayloadInvalid("send application/json", field="content-type", status=415)
        limit = self.hub.settings.max_body_bytes
        raw = await request.content.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge("body too large", limit_bytes=limit)
        body = parse_json_model(SubjectRequest, raw or b"{}")
        return requests, Subject(body.channel, body.user_id, body.email), body

    async def export(self, request: web.Request) -> web.Response:
        """``POST .../export``: everything stored about one customer."""
        requests, subject, _ = await self._subject(request)
        doc = await requests.export(subject, actor=ACTOR)
        log.info("privacy.exported", extra={"sessions": len(doc["sessions"])})
        return web.Response(text=json_dumps(doc), content_type="application/json")

    async def erase(self, request: web.Request) -> web.Response:
        """``POST .../erase``: delete or anonymize one customer everywhere."""
        requests, subject, body = await self._subject(request)
        if not body.confirm:
            raise PayloadInvalid('erasure cannot be undone: send "confirm": true', field="confirm")
        report = await requests.erase(subject, actor=ACTOR)
        log.info(
            "privacy.erased", extra={"request_id": report.request_id, "sessions": report.sessions}
        )
        return web.json_response(report.as_json())


def setup_admin(app: web.Application, hub: Hub) -> AdminPrivacy:
    """Add the privacy admin routes to the server's application (before it starts)."""
    admin = AdminPrivacy(hub)
    app.add_routes(
        [web.post(f"{PREFIX}/export", admin.export), web.post(f"{PREFIX}/erase", admin.erase)]
    )
    return admin
