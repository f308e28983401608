"""The console's desk API: canned replies, conversation search, copilot, analytics.

- ``GET /console/api/canned?q=&session_key=`` (``read``) → ``{"canned": [{"id", "shortcut",
  "title", "body", "text"}]}``: replies whose shortcut, title or body contain ``q``; ``text`` is
  the body with its placeholders filled for the conversation ``session_key`` (the body when
  none is given; :mod:`bot.desk.canned`).
- ``POST /console/api/canned`` ``{"shortcut", "title", "body"}`` (``manage``: admins) → 201
  ``{"canned"}``; ``POST /console/api/canned/{id}`` the same fields → ``{"canned"}``;
  ``DELETE /console/api/canned/{id}`` → 204. 400 for a bad field or an unknown placeholder,
  404 for an unknown id, 409 for a shortcut in use; agents and viewers get 403.
- ``GET /console/api/search?text=&customer=&channel=&status=&from=&to=&limit=`` (``read``) →
  ``{"results": [{"conversation", "seq", "snippet"}]}`` (:mod:`bot.desk.search`; ``from`` and
  ``to`` are ISO 8601 dates, ``to`` inclusive, or date-times).
- ``GET /console/api/conversations/{key}/copilot`` (``read``) → summary and suggested answer
  (:mod:`bot.console.copilot`).
- ``GET /console/api/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD`` (``read``) → the figures of
  :func:`bot.desk.analytics.compute` (default: the last 30 days, UTC);
  ``GET /console/api/analytics.csv`` the same as CSV (:func:`bot.desk.analytics.to_csv`),
  as a download.
- ``GET /console/analytics``: the analytics page (charts drawn by the vendored Chart.js).

Every call checks the session, the CSRF token on changes and the role (:func:`actor`).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

from aiohttp import web

from bot.auth import Permission
from bot.console.context import actor, hub_of, json_body
from bot.console.copilot import copilot
from bot.console.views import channel_label, conversation_json, customer_display_name
from bot.desk import analytics, canned
from bot.desk.search import SearchQuery, search
from bot.desk.store import CannedReply, DeskStore
from bot.envelope import SessionKey, utcnow
from bot.errors import NotFound, PayloadInvalid
from bot.retrieval import Retriever
from bot.store.base import AgentAccount, SessionMode

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30


def _desk(request: web.Request) -> DeskStore:
    return hub_of(request).handoff.desk


def _canned_json(reply: CannedReply, text: str | None = None) -> dict[str, Any]:
    return {
        "id": reply.id,
        "shortcut": reply.shortcut,
        "title": reply.title,
        "body": reply.body,
        "text": reply.body if text is None else text,
        "updated_by": reply.updated_by,
        "updated_at": reply.updated_at.isoformat(),
    }


async def _placeholders(
    request: web.Request, key: str, account: AgentAccount
) -> dict[str, str | None]:
    conv = await hub_of(request).store.conversation(SessionKey(key))
    if conv is None:
        raise NotFound(f"no conversation {key!r}")
    display = customer_display_name(conv.customer, conv.channel)
    named = bool(conv.customer.name) and display == (conv.customer.name or "").strip()
    return {
        # A real name, else "there" ("Hi there"): never a label like "Web chat visitor 3f2a".
        "customer.name": display if named else "there",
        "customer.email": conv.customer.email if conv.customer.verified else None,
        "ticket.id": conv.ticket_id,
        "agent.name": account.display_name,
        "channel": channel_label(conv.channel),
    }


async def list_canned(request: web.Request) -> web.StreamResponse:
    """Canned replies matching ``q``, filled for ``session_key`` when given."""
    account = await actor(request, Permission.READ)
    replies = await _desk(request).canned(request.query.get("q", "")[:200])
    key = request.query.get("session_key")
    values = await _placeholders(request, key, account) if key else None
    return web.json_response(
        {
            "canned": [
                _canned_json(r, canned.fill(r.body, values) if values is not None else None)
                for r in replies
            ]
        }
    )


def _canned_fields(data: dict[str, Any]) -> tuple[str, str, str]:
    fields = []
    for name in ("shortcut", "title", "body"):
        value = data.get(name)
        if not isinstance(value, str):
            raise PayloadInvalid(f"{name} must be a string", field=name)
        fields.append(value.strip() if name != "body" else value)
    shortcut, title, body = fields
    canned.check(shortcut, title, body)
    return shortcut, title, body


def _reply_id(request: web.Request) -> int:
    try:
        return int(request.match_info["reply_id"])
    except ValueError:
        raise NotFound("no such canned reply") from None


async def create_canned(request: web.Request) -> web.StreamResponse:
    """Create a canned reply (admins)."""
    admin = await actor(request, Permission.MANAGE)
    shortcut, title, body = _canned_fields(await json_body(request))
    reply = await _desk(request).save_canned(
        shortcut=shortcut, title=title, body=body, actor=admin.name
    )
    await hub_of(request).store.audit(admin.name, "canned_create", None, {"id": reply.id})
    log.info("console.canned_created", extra={"agent": admin.name, "canned_id": reply.id})
    return web.json_response({"canned": _canned_json(reply)}, status=201)


async def update_canned(request: web.Request) -> web.StreamResponse:
    """Replace a canned reply's shortcut, title and body (admins)."""
    admin = await actor(request, Permission.MANAGE)
    reply_id = _reply_id(request)
    shortcut, title, body = _canned_fields(await json_body(request))
    reply = await _desk(request).save_canned(
        shortcut=shortcut, title=title, body=body, actor=admin.name, reply_id=reply_id
    )
    await hub_of(request).store.audit(admin.name, "canned_update", None, {"id": reply.id})
    return web.json_response({"canned": _canned_json(reply)})


async def delete_canned(request: web.Request) -> web.StreamResponse:
    """Delete a canned reply (admins)."""
    admin = await actor(request, Permission.MANAGE)
    reply_id = _reply_id(request)
    await _desk(request).delete_canned(reply_id)
    await hub_of(request).store.audit(admin.name, "canned_delete", None, {"id": reply_id})
    return web.Response(status=204)


def _when(raw: str | None, name: str, *, end: bool) -> datetime | None:
    """An ISO date (the day's start; for ``end`` the next day's start) or date-time, in UTC."""
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(
                day + timedelta(days=1 if end else 0), datetime.min.time(), UTC
            )
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadInvalid(f"{name} must be an ISO 8601 date or date-time", field=name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def search_conversations(request: web.Request) -> web.StreamResponse:
    """Conversations matching text, customer, channel, status and a date range."""
    await actor(request, Permission.READ)
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in {m.value for m in SessionMode}:
        raise PayloadInvalid("status must be bot, queued, human or closed", field="status")
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise PayloadInvalid("limit must be an integer", field="limit") from None
    query = SearchQuery(
        text=q.get("text", "")[:500],
        customer=q.get("customer", "")[:200],
        channel=q.get("channel") or None,
        status=SessionMode(status) if status else None,
        since=_when(q.get("from"), "from", end=False),
        until=_when(q.get("to"), "to", end=True),
        limit=limit,
    )
    hits = await search(await _desk(request).open(), query)
    return web.json_response(
        {
            "results": [
                {
                    "conversation": conversation_json(h.conversation),
                    "seq": h.seq,
                    "snippet": h.snippet,
                }
                for h in hits
            ]
        }
    )


async def conversation_copilot(request: web.Request) -> web.StreamResponse:
    """The copilot's summary and suggested answer for one conversation."""
    await actor(request, Permission.READ)
    hub = hub_of(request)
    key = SessionKey(request.match_info["session_key"])
    conv = await hub.store.conversation(key)
    if conv is None:
        raise NotFound(f"no conversation {key!r}")
    history = await hub.store.messages(key, limit=500)
    retriever: Retriever | None = getattr(hub, "retriever_or_empty", None)  # the Hub has one
    body = await copilot(hub.settings, conv, history, retriever, hub.handoff.desk)
    return web.json_response(body)


def _range(request: web.Request) -> tuple[date, date]:
    today = utcnow().date()
    try:
        last = date.fromisoformat(request.query["to"][:10]) if request.query.get("to") else today
        first = (
            date.fromisoformat(request.query["from"][:10])
            if request.query.get("from")
            else last - timedelta(days=DEFAULT_DAYS - 1)
        )
    except ValueError:
        raise PayloadInvalid(
            "from and to must be ISO 8601 dates (YYYY-MM-DD)", field="from"
        ) from None
    if first > last:
        raise PayloadInvalid("from must not be after to", field="from")
    if (last - first).days >= analytics.MAX_DAYS:
        raise PayloadInvalid(f"at most {analytics.MAX_DAYS} days at once", field="from")
    return first, last


async def analytics_json(request: web.Request) -> web.StreamResponse:
    """The analytics figures as JSON."""
    await actor(request, Permission.READ)
    first, last = _range(request)
    return web.json_response(await analytics.compute(_desk(request), first, last))


async def analytics_csv(request: web.Request) -> web.StreamResponse:
    """The analytics figures as a CSV download."""
    await actor(request, Permission.READ)
    first, last = _range(request)
    figures = await analytics.compute(_desk(request), first, last)
    name = f"switchboard-analytics-{first.isoformat()}-{last.isoformat()}.csv"
    return web.Response(
        text=analytics.to_csv(figures),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def analytics_page(request: web.Request) -> web.StreamResponse:
    """The analytics page (it logs in through the console's session)."""
    html = resources.files("bot.console").joinpath("static/analytics.html").read_text("utf-8")
    return web.Response(text=html, content_type="text/html", charset="utf-8")


ROUTES = [
    web.get("/analytics", analytics_page),
    web.get("/api/canned", list_canned),
    web.post("/api/canned", create_canned),
    web.post("/api/canned/{reply_id}", update_canned),
    web.delete("/api/canned/{reply_id}", delete_canned),
    web.get("/api/search", search_conversations),
    web.get("/api/analytics", analytics_json),
    web.get("/api/analytics.csv", analytics_csv),
]
"""The routes :func:`bot.console.routes.console_app` adds (the copilot's is added before the
other conversation routes, whose ``{session_key:.+}`` would swallow it)."""

COPILOT_ROUTE = web.get("/api/conversations/{session_key:.+}/copilot", conversation_copilot)
