"""A fake Zendesk Support API v2 (https://developer.zendesk.com/api-reference/ticketing/).

``GET /api/v2/users/me.json``, ``POST /api/v2/tickets.json``, ``GET|PUT
/api/v2/tickets/{id}.json``, ``GET /api/v2/tickets/{id}/comments.json``, ``GET
/api/v2/tickets.json?external_id=``; Basic auth ``{email}/token:{token}``. It also writes the
event webhook bodies Zendesk sends when an agent acts (:meth:`FakeZendesk.agent_reply`,
:meth:`FakeZendesk.solve`), for the tests to sign and post to the hub.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.ticket_systems import FakeTicketSystem, now_iso


class FakeZendesk(FakeTicketSystem):
    """The fake Zendesk Support API.

    Attributes:
        tickets: ticket JSON by id; ``comments``: comment JSON lists by ticket id.
        role: what ``users/me`` says the API user is (``admin``, ``agent``, ``end-user``).
        lose_next_create: create the next ticket but answer 504 (the answer is lost on the
            way, as when a proxy times out): the client cannot know it was created.
    """

    def __init__(self, *, email: str = "bot@example.com", token: str = "zd-token") -> None:
        super().__init__(email=email, token=token)
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.role = "admin"
        self.lose_next_create = False
        self._ids = itertools.count(101)
        self._comment_ids = itertools.count(9001)

    def _basic(self) -> str:
        raw = f"{self.email}/token:{self.token}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def routes(self) -> list[web.RouteDef]:
        """Zendesk's routes (see the module)."""
        return [
            web.get("/api/v2/users/me.json", self._me),
            web.post("/api/v2/tickets.json", self._create),
            web.get("/api/v2/tickets.json", self._list),
            web.get(r"/api/v2/tickets/{id:\d+}.json", self._show),
            web.put(r"/api/v2/tickets/{id:\d+}.json", self._update),
            web.get(r"/api/v2/tickets/{id:\d+}/comments.json", self._comments),
        ]

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"user": {"id": 7, "name": "Switchboard", "email": self.email, "role": self.role}}
        )

    def _add_comment(
        self, ticket_id: int, body: str, public: bool, author_id: int
    ) -> dict[str, Any]:
        comment = {
            "id": next(self._comment_ids),
            "type": "Comment",
            "author_id": author_id,
            "body": body,
            "public": public,
            "created_at": now_iso(),
        }
        self.comments.setdefault(ticket_id, []).append(comment)
        return comment

    async def _create(self, request: web.Request) -> web.Response:
        data = (await request.json())["ticket"]
        ticket_id = next(self._ids)
        comment = data.get("comment") or {}
        ticket = {
            "id": ticket_id,
            "url": f"{self.url}/api/v2/tickets/{ticket_id}.json",
            "subject": data.get("subject", ""),
            "description": comment.get("body", ""),
            "status": "new",
            "priority": data.get("priority"),
            "requester_id": 7,
            "submitter_id": 7,
            "external_id": data.get("external_id"),
            "tags": data.get("tags", []),
            "created_at": now_iso(),
            "updated_at": now_iso(),
        }
        self.tickets[ticket_id] = ticket
        self._add_comment(ticket_id, comment.get("body", ""), comment.get("public", True), 7)
        if self.lose_next_create:
            self.lose_next_create = False
            return web.json_response({"error": "Gateway Timeout"}, status=504)
        return web.json_response({"ticket": ticket, "audit": self._audit(ticket_id)}, status=201)

    def _audit(self, ticket_id: int) -> dict[str, Any]:
        return {
            "id": next(self._comment_ids),
            "ticket_id": ticket_id,
            "author_id": 7,
            "created_at": now_iso(),
            "events": [],
        }

    async def _list(self, request: web.Request) -> web.Response:
        ref = request.query.get("external_id")
        found = [t for t in self.tickets.values() if ref is None or t["external_id"] == ref]
        return web.json_response(_page("tickets", found))

    def _ticket_or_404(self, request: web.Request) -> dict[str, Any] | None:
        return self.tickets.get(int(request.match_info["id"]))

    async def _show(self, request: web.Request) -> web.Response:
        ticket = self._ticket_or_404(request)
        if ticket is None:
            return _zendesk_404()
        return web.json_response({"ticket": ticket})

    async def _update(self, request: web.Request) -> web.Response:
        ticket = self._ticket_or_404(request)
        if ticket is None:
            return _zendesk_404()
        data = (await request.json())["ticket"]
        if "status" in data:
            ticket["status"] = data["status"]
        if "comment" in data:
            c = data["comment"]
            self._add_comment(ticket["id"], c.get("body", ""), c.get("public", True), 7)
        ticket["updated_at"] = now_iso()
        return web.json_response({"ticket": ticket, "audit": self._audit(ticket["id"])})

    async def _comments(self, request: web.Request) -> web.Response:
        ticket = self._ticket_or_404(request)
        if ticket is None:
            return _zendesk_404()
        return web.json_response(_page("comments", self.comments.get(ticket["id"], [])))

    # --- what Zendesk sends to the webhook -----------------------------------------------------

    def agent_reply(
        self, ticket_id: int, body: str, *, author: str = "Jane Agent", public: bool = True
    ) -> bytes:
        """An agent's comment on the ticket; the ``ticket.comment_added`` webhook body."""
        comment = self._add_comment(ticket_id, body, public, 42)
        event = {
            "comment": {
                "id": str(comment["id"]),
                "body": body,
                "is_public": public,
                "author": {"id": "42", "name": author, "is_staff": True},
            }
        }
        return self._event("zen:event-type:ticket.comment_added", ticket_id, event)

    def solve(self, ticket_id: int) -> bytes:
        """The agent solves the ticket; the ``ticket.status_changed`` webhook body."""
        previous = self.tickets[ticket_id]["status"]
        self.tickets[ticket_id]["status"] = "solved"
        event = {"current": "SOLVED", "previous": str(previous).upper()}
        return self._event("zen:event-type:ticket.status_changed", ticket_id, event)

    def _event(self, kind: str, ticket_id: int, event: dict[str, Any]) -> bytes:
        ticket = self.tickets[ticket_id]
        detail = {
            "id": str(ticket_id),
            "status": str(ticket["status"]).upper(),
            "subject": ticket["subject"],
            "requester_id": "7",
            "external_id": ticket["external_id"],
            "created_at": ticket["created_at"],
            "updated_at": now_iso(),
            "via": {"channel": "web"},
        }
        payload = {
            "type": kind,
            "account_id": 12345,
            "id": str(uuid.uuid4()),
            "time": now_iso(),
            "zendesk_event_version": "2022-11-06",
            "subject": f"zen:ticket:{ticket_id}",
            "detail": detail,
            "event": event,
        }
        return json.dumps(payload).encode()


def _page(key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: items,
        "next_page": None,
        "previous_page": None,
        "count": len(items),
        "meta": {"has_more": False, "after_cursor": None, "before_cursor": None},
        "links": {"next": None, "prev": None},
    }


def _zendesk_404() -> web.Response:
    return web.json_response({"error": "RecordNotFound", "description": "Not found"}, status=404)
