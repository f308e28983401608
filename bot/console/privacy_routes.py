"""The console's audit log and data-subject requests (role ``admin``: ``Permission.MANAGE``).

- ``GET /console/api/audit?limit=N`` → ``{"entries": [{"seq", "at", "actor", "action",
  "session_key", "detail", "erased"}]}``, newest first (``limit`` 1..500, default 100).
- ``GET /console/api/audit.jsonl`` → the whole chained log as JSON Lines, oldest first (the
  lines of ``switchboard audit export``: :func:`bot.store.audit.export_line`).
- ``POST /console/api/customers/export`` ``{"id"}`` → everything stored about one customer
  (:meth:`bot.subjects.SubjectRequests.export`: database rows, messages waiting in lanes,
  knowledge-base material); ``id`` is an e-mail address or ``CHANNEL:USER_ID``.
- ``POST /console/api/customers/erase`` ``{"id", "confirm": true}`` → ``{"request_id",
  "sessions", "deleted", "anonymized", "audit_erased", "elsewhere"}``: deletes or anonymizes
  the customer everywhere (:meth:`bot.subjects.SubjectRequests.erase`).

Agents and viewers get 403. Export and erase are written to the audit log with the admin as
actor; the customer's identifiers are never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bot.auth import Permission
from bot.console.context import actor, hub_of, json_body
from bot.errors import BackendUnavailable, PayloadInvalid
from bot.store.audit import export_line
from bot.store.engine import json_dumps
from bot.store.sql import SqlStore
from bot.store.subjects import Subject

log = logging.getLogger(__name__)

MAX_ENTRIES = 500
"""The most audit entries one ``GET /console/api/audit`` returns."""


def _sql_store(request: web.Request) -> SqlStore:
    store = hub_of(request).store
    if not isinstance(store, SqlStore):
        raise BackendUnavailable("the audit log and data-subject requests need the SQL store")
    return store


def _subject(data: dict[str, Any]) -> Subject:
    ident = data.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise PayloadInvalid("id is required: an e-mail address or CHANNEL:USER_ID", field="id")
    return Subject.parse(ident)


async def audit_entries(request: web.Request) -> web.StreamResponse:
    """The newest audit entries (admins only)."""
    await actor(request, Permission.MANAGE)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise PayloadInvalid("limit is a number", field="limit") from exc
    if not 1 <= limit <= MAX_ENTRIES:
        raise PayloadInvalid(f"limit is 1..{MAX_ENTRIES}", field="limit")
    records = await _sql_store(request).audit_records(limit=limit)
    entries = [
        {
            "seq": r.seq,
            "at": r.at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "session_key": r.session_key,
            "detail": r.detail,
            "erased": r.erased,
        }
        for r in records
    ]
    return web.json_response({"entries": entries})


async def audit_export(request: web.Request) -> web.StreamResponse:
    """The chained log as JSON Lines (admins only), streamed in pages of 1,000 entries."""
    await actor(request, Permission.MANAGE)
    store = _sql_store(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": 'attachment; filename="audit.jsonl"',
        }
    )
    await response.prepare(request)
    after = 0
    while rows := await store.audit_chain_rows(after_seq=after, limit=1000):
        text = "".join(json_dumps(export_line(row)) + "\n" for row in rows)
        await response.write(text.encode())
        after = rows[-1].seq
    await response.write_eof()
    return response


async def customer_export(request: web.Request) -> web.StreamResponse:
    """Everything stored about one customer (admins only)."""
    admin = await actor(request, Permission.MANAGE)
    subject = _subject(await json_body(request))
    doc = await hub_of(request).subject_requests().export(subject, actor=admin.name)
    log.info("console.customer_exported", extra={"actor": admin.name})
    return web.Response(
        text=json_dumps(doc),
        content_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="customer.json"'},
    )


async def customer_erase(request: web.Request) -> web.StreamResponse:
    """Delete or anonymize one customer everywhere (admins only; ``confirm`` required)."""
    admin = await actor(request, Permission.MANAGE)
    data = await json_body(request)
    subject = _subject(data)
    if data.get("confirm") is not True:
        raise PayloadInvalid('erasure cannot be undone: send "confirm": true', field="confirm")
    report = await hub_of(request).subject_requests().erase(subject, actor=admin.name)
    log.info("console.customer_erased", extra={"actor": admin.name, "request": report.request_id})
    return web.json_response(report.as_json())


ROUTES = [
    web.get("/api/audit", audit_entries),
    web.get("/api/audit.jsonl", audit_export),
    web.post("/api/customers/export", customer_export),
    web.post("/api/customers/erase", customer_erase),
]
"""The routes :func:`bot.console.routes.console_app` adds."""
