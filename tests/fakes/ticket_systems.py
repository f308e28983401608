"""Fake Zendesk Support and Jira Service Management servers (aiohttp on 127.0.0.1, port 0).

Both follow the products' documented wire formats closely enough for the real SDKs (``zenpy``,
``jira``) pointed at them by base URL, record every request (:attr:`FakeTicketSystem.requests`)
and can be scripted to fail (:meth:`FakeTicketSystem.fail_next`: a 429 with ``Retry-After``,
a 503; :attr:`FakeTicketSystem.down`: every request 503). They also write the webhook bodies
the products send when an agent acts (:meth:`FakeZendesk.agent_reply`,
:meth:`FakeJira.agent_reply`...), for the tests to sign and post to the hub.

Zendesk Support API v2 (https://developer.zendesk.com/api-reference/ticketing/tickets/tickets/):
``GET /api/v2/users/me.json``, ``POST /api/v2/tickets.json``, ``GET|PUT
/api/v2/tickets/{id}.json``, ``GET /api/v2/tickets/{id}/comments.json``, ``GET
/api/v2/tickets.json?external_id=``; Basic auth ``{email}/token:{token}``.

Jira Cloud platform v2 and Service Management APIs: ``GET /rest/api/2/myself``, ``GET
/rest/servicedeskapi/servicedesk/{id}``, ``POST /rest/servicedeskapi/request``, ``GET
/rest/api/2/issue/{key}``, ``POST /rest/api/2/issue/{key}/comment``, ``GET|POST
/rest/api/2/issue/{key}/transitions``; Basic auth ``{email}:{token}``.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request: method, path, query, JSON body (None when absent) and headers."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(repr=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeTicketSystem:
    """Shared machinery: serving, auth, recording, scripted failures.

    Attributes:
        requests: every request, in order (also those refused).
        down: answer every request 503 (the product is down).
        token: the credential accepted.
    """

    def __init__(self, *, email: str, token: str) -> None:
        self.email = email
        self.token = token
        self.requests: list[Recorded] = []
        self.down = False
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _basic(self) -> str:
        raise NotImplementedError

    def routes(self) -> list[web.RouteDef]:
        """The product's routes."""
        raise NotImplementedError

    def fail_next(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._failures += [(status, headers)] * times

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        """Recorded requests with this method whose path starts with ``path_prefix``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            Recorded(
                request.method, request.path, dict(request.query), body, dict(request.headers)
            )
        )
        if self.down:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        if self._failures:
            status, headers = self._failures.pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        if request.headers.get("Authorization") != self._basic():
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        return await handler(request)

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


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
            "created_at": _now(),
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
            "created_at": _now(),
            "updated_at": _now(),
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
            "created_at": _now(),
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
        ticket["updated_at"] = _now()
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
            "updated_at": _now(),
            "via": {"channel": "web"},
        }
        payload = {
            "type": kind,
            "account_id": 12345,
            "id": str(uuid.uuid4()),
            "time": _now(),
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


TRANSITIONS: list[dict[str, Any]] = [
    {
        "id": "761",
        "name": "Resolve this issue",
        "to": {"name": "Resolved", "statusCategory": {"key": "done"}},
    },
    {
        "id": "871",
        "name": "Respond to customer",
        "to": {"name": "Waiting for customer", "statusCategory": {"key": "indeterminate"}},
    },
    {
        "id": "11",
        "name": "Back to open",
        "to": {"name": "Waiting for support", "statusCategory": {"key": "new"}},
    },
]
"""The fake workflow: every transition is available from every status."""


class FakeJira(FakeTicketSystem):
    """The fake Jira Cloud + Service Management API.

    Attributes:
        issues: issue JSON by key (``SUP-1``...); the service desk is ``desk_id``.
    """

    def __init__(
        self, *, email: str = "bot@example.com", token: str = "jira-token", desk_id: str = "4"
    ) -> None:
        super().__init__(email=email, token=token)
        self.desk_id = desk_id
        self.issues: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._comment_ids = itertools.count(5001)

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()

    def routes(self) -> list[web.RouteDef]:
        """Jira's routes (see the module)."""
        return [
            web.get("/rest/api/2/myself", self._myself),
            web.get("/rest/servicedeskapi/servicedesk/{id}", self._desk),
            web.post("/rest/servicedeskapi/request", self._create),
            web.get("/rest/api/2/issue/{key}", self._issue),
            web.post("/rest/api/2/issue/{key}/comment", self._comment),
            web.get("/rest/api/2/issue/{key}/transitions", self._transitions),
            web.post("/rest/api/2/issue/{key}/transitions", self._transition),
        ]

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "accountId": "5b10a2844c20165700ede21g",
                "accountType": "atlassian",
                "displayName": "Switchboard",
                "active": True,
            }
        )

    async def _desk(self, request: web.Request) -> web.Response:
        if request.match_info["id"] != self.desk_id:
            return _jira_404("Service desk does not exist")
        return web.json_response(
            {
                "id": self.desk_id,
                "projectId": "10001",
                "projectName": "Support",
                "projectKey": "SUP",
                "_links": {},
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        data = await request.json()
        if str(data.get("serviceDeskId")) != self.desk_id:
            return _jira_404("Service desk does not exist")
        values = data["requestFieldValues"]
        num = next(self._ids)
        key = f"SUP-{num}"
        self.issues[key] = {
            "id": str(10000 + num),
            "key": key,
            "self": f"{self.url}/rest/api/2/issue/{10000 + num}",
            "fields": {
                "summary": values["summary"],
                "description": values.get("description"),
                "status": {"name": "Waiting for support", "statusCategory": {"key": "new"}},
                "priority": {"name": "Medium"},
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                "comment": {"comments": [], "total": 0},
            },
        }
        return web.json_response(
            {
                "issueId": str(10000 + num),
                "issueKey": key,
                "requestTypeId": str(data["requestTypeId"]),
                "serviceDeskId": self.desk_id,
                "currentStatus": {"status": "Waiting for support", "statusCategory": "NEW"},
                "_links": {"web": f"{self.url}/servicedesk/customer/portal/4/{key}"},
            },
            status=201,
        )

    async def _issue(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return _jira_404("Issue does not exist or you do not have permission to see it.")
        return web.json_response(issue)

    def _add_comment(self, key: str, body: str, author: str, public: bool) -> dict[str, Any]:
        comment = {
            "id": str(next(self._comment_ids)),
            "body": body,
            "jsdPublic": public,
            "author": {"displayName": author, "accountType": "atlassian"},
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        }
        comments = self.issues[key]["fields"]["comment"]
        comments["comments"].append(comment)
        comments["total"] = len(comments["comments"])
        return comment

    async def _comment(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.issues:
            return _jira_404("Issue does not exist or you do not have permission to see it.")
        data = await request.json()
        internal = any(
            p.get("key") == "sd.public.comment" and p.get("value", {}).get("internal")
            for p in data.get("properties", [])
        )
        return web.json_response(
            self._add_comment(key, data["body"], "Switchboard", not internal), status=201
        )

    async def _transitions(self, request: web.Request) -> web.Response:
        if request.match_info["key"] not in self.issues:
            return _jira_404("Issue does not exist or you do not have permission to see it.")
        return web.json_response({"transitions": TRANSITIONS})

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return _jira_404("Issue does not exist or you do not have permission to see it.")
        wanted = str((await request.json())["transition"]["id"])
        target = next((t for t in TRANSITIONS if t["id"] == wanted), None)
        if target is None:
            return web.json_response({"errorMessages": ["bad transition"]}, status=400)
        issue["fields"]["status"] = dict(target["to"])
        return web.Response(status=204)

    # --- what Jira sends to the webhook ------------------------------------------------------

    def agent_reply(
        self, key: str, body: str, *, author: str = "Jane Agent", public: bool = True
    ) -> tuple[bytes, str]:
        """An agent's comment; the ``comment_created`` body and its delivery identifier."""
        comment = self._add_comment(key, body, author, public)
        payload = {
            "timestamp": 1765000000000,
            "webhookEvent": "comment_created",
            "comment": comment,
            "issue": {
                "id": self.issues[key]["id"],
                "key": key,
                "fields": {"status": self.issues[key]["fields"]["status"]},
            },
        }
        return json.dumps(payload).encode(), str(uuid.uuid4())

    def resolve(self, key: str) -> tuple[bytes, str]:
        """The agent resolves the request; the ``jira:issue_updated`` body and delivery id."""
        issue = self.issues[key]
        before = issue["fields"]["status"]["name"]
        issue["fields"]["status"] = dict(TRANSITIONS[0]["to"])
        payload = {
            "timestamp": 1765000000000,
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "issue": issue,
            "changelog": {
                "id": "10100",
                "items": [
                    {
                        "field": "status",
                        "fieldtype": "jira",
                        "fromString": before,
                        "toString": "Resolved",
                    }
                ],
            },
        }
        return json.dumps(payload).encode(), str(uuid.uuid4())


def _jira_404(message: str) -> web.Response:
    return web.json_response({"errorMessages": [message], "errors": {}}, status=404)
