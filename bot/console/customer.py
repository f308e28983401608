"""The console's customer panel: the CRM record behind a conversation's customer.

- ``GET /console/api/conversations/{key}/customer`` (``read`` permission) →
  ``{"crm": "hubspot"|"salesforce"|null, "verified": bool, "contact": {"name", "email",
  "phone", "company", "plan", "owner", "url"}|null, "open_tickets": [{"id", "subject",
  "status", "url"}]}``. ``crm`` is null when no CRM is configured (the panel stays hidden).
  The CRM is asked only for a customer whose identity the channel verified (a self-asserted
  e-mail could show someone else's record); ``contact`` is null when unverified or unknown.
  404 for an unknown conversation; 429 (``Retry-After``) when the CRM rate-limits us, 503
  while it is down.

Each lookup is audited (``crm_lookup``: who read which conversation's customer record).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from aiohttp import web

from bot.auth import Permission
from bot.console.context import actor, hub_of
from bot.envelope import SessionKey
from bot.errors import BackendUnavailable, NotFound
from bot.tools import OPEN_TICKET_STATUSES, CustomerIdentity

log = logging.getLogger(__name__)


async def customer_panel(request: web.Request) -> web.StreamResponse:
    """The conversation's customer as the CRM knows them (see the module docstring)."""
    account = await actor(request, Permission.READ)
    hub = hub_of(request)
    key = SessionKey(request.match_info["session_key"])
    conv = await hub.store.conversation(key)
    if conv is None:
        raise NotFound(f"no conversation {key!r}")
    crm = hub.crm
    body: dict[str, Any] = {
        "crm": crm.name if crm is not None else None,
        "verified": conv.customer.verified,
        "contact": None,
        "open_tickets": [],
    }
    if crm is None:
        return web.json_response(body)
    try:
        if conv.customer.verified:
            contact = await crm.find_contact(CustomerIdentity.of(conv.customer, conv.channel))
            if contact is not None:
                body["contact"] = {k: v for k, v in asdict(contact).items() if k != "id"}
        tickets = await hub.tickets.list_for(conv.customer.id, conv.channel)
    except BackendUnavailable as exc:
        log.warning("console.crm_unavailable", extra={"session_key": key, "backend": crm.name})
        return web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "10"})
    body["open_tickets"] = [
        {"id": t.id, "subject": t.subject, "status": t.status, "url": t.url}
        for t in tickets
        if t.status in OPEN_TICKET_STATUSES
    ]
    await hub.store.audit(
        account.name,
        "crm_lookup",
        key,
        {"backend": crm.name, "found": body["contact"] is not None},
    )
    return web.json_response(body)


ROUTES = [web.get("/api/conversations/{session_key:.+}/customer", customer_panel)]
"""The panel's route, mounted by :func:`bot.console.routes.console_app`."""
