"""A fake Jira Cloud platform v2 and Jira Service Management API.

``GET /rest/api/2/myself``, ``GET /rest/servicedeskapi/servicedesk/{id}``, ``POST
/rest/servicedeskapi/request``, ``GET /rest/api/2/search/jql`` (enhanced search; the JQL it
understands is ``project = "KEY" AND text ~ "\\"phrase\\""``: issues whose summary or
description holds the phrase, newest first), ``GET /rest/api/2/issue/{key}``, ``POST
/rest/api/2/issue/{key}/comment``, ``GET|POST /rest/api/2/issue/{key}/transitions``; Basic auth
``{email}:{token}``. It also writes the webhook bodies Jira sends when an agent acts
(:meth:`FakeJira.agent_reply`, :meth:`FakeJira.resolve`).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.ticket_systems import FakeTicketSystem

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
        lose_next_create: raise the next request but answer 504 (the answer is lost on the way,
            as when a proxy times out): the client cannot know it was created.
    """

    def __init__(
        self, *, email: str = "bot@example.com", token: str = "jira-token", desk_id: str = "4"
    ) -> None:
        super().__init__(email=email, token=token)
        self.desk_id = desk_id
        self.issues: dict[str, dict[str, Any]] = {}
        self.lose_next_create = False
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
            web.get("/rest/api/2/search/jql", self._search),
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
        if self.lose_next_create:
            self.lose_next_create = False
            return web.json_response({"errorMessages": ["Gateway Timeout"]}, status=504)
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

    async def _search(self, request: web.Request) -> web.Response:
        jql = request.query.get("jql", "")
        project = re.search(r'project\s*=\s*"?([A-Z][A-Z0-9]*)"?', jql)
        phrase = re.search(r'text\s*~\s*"\\"(.*?)\\""', jql)
        if project is None or phrase is None:
            return web.json_response(
                {"errorMessages": [f"The fake understands no such JQL: {jql}"]}, status=400
            )
        hits = [
            {"id": issue["id"], "key": key}
            for key, issue in self.issues.items()
            if key.startswith(f"{project.group(1)}-")
            and any(
                phrase.group(1) in str(issue["fields"].get(name) or "")
                for name in ("summary", "description")
            )
        ]
        return web.json_response({"issues": hits[::-1], "isLast": True})

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
