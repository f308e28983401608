"""Jira Service Management (Cloud) through the ``jira`` SDK: customer requests and comments.

Wire formats: Jira Service Management REST API (https://developer.atlassian.com/cloud/jira/
service-desk/rest/): ``GET /rest/servicedeskapi/servicedesk/{id}`` and ``POST
/rest/servicedeskapi/request`` (``serviceDeskId``, ``requestTypeId``, ``requestFieldValues``:
``summary`` and ``description``, ``raiseOnBehalfOf`` when the customer's e-mail is known); Jira
Cloud platform REST API v2 (https://developer.atlassian.com/cloud/jira/platform/rest/v2/):
``GET /rest/api/2/issue/{key}``, ``POST /rest/api/2/issue/{key}/comment`` (internal: the
``sd.public.comment`` property), ``GET``/``POST /rest/api/2/issue/{key}/transitions`` and ``GET
/rest/api/2/myself``. Authentication is HTTP Basic with the user's e-mail and an API token.

The SDK is synchronous: calls run in a thread. Its own retry loop is off (``max_retries=0``):
a 429 becomes :class:`~bot.errors.RateLimited` with ``Retry-After`` and tenacity waits out short
limits (:func:`~plugins.ticketing.remote.call_remote`).

A customer request cannot carry a hidden reference at creation, so the hub's reference is the
description's last line (``Switchboard reference: SB-…``) and :meth:`JiraTickets.find` looks it
up with JQL (``GET /rest/api/2/search/jql``, Jira's enhanced search,
https://developer.atlassian.com/cloud/jira/platform/rest/v2/api-group-issue-search/), then
checks the line in each hit. A request whose answer was lost (a timeout, a 5xx after Jira
created it) or whose process died before writing the answer down is found when the creation is
retried, not raised twice. The enhanced search is eventually consistent: a request created
seconds before the retry may not be indexed yet; the deferred retry comes later than that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import requests
from jira import JIRA, JIRAError

from bot.config import Settings
from bot.envelope import Participant
from bot.errors import (
    BackendUnavailable,
    ConfigError,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
    SwitchboardError,
    Unauthorized,
)
from bot.tools import BackendCheck
from plugins.ticketing.remote import (
    RemoteTicket,
    call_remote,
    error_for_status,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TO_HUB_PRIORITY: Final = {
    "lowest": "low",
    "low": "low",
    "medium": "normal",
    "high": "high",
    "highest": "urgent",
}
"""Jira's default priority names (lower-cased) → hub priorities."""

REFERENCE_LINE: Final = "Switchboard reference: {ref}"
"""The last line of every request's description: the hub's reference (:meth:`JiraTickets.find`)."""

TARGET_CATEGORY: Final = {
    "open": ("new", "indeterminate"),
    "pending": ("indeterminate", "new"),
    "solved": ("done",),
    "closed": ("done",),
}
"""Hub status → Jira status categories a transition may lead to, preferred first."""


class JiraTickets:
    """:class:`~plugins.ticketing.remote.RemoteTickets` on Jira Service Management.

    Args:
        settings: ``jira_url``, ``jira_email``, ``jira_api_token``, ``jira_service_desk_id``,
            ``jira_request_type_id``, ``ticket_timeout_s``, ``ticket_retry_max_wait_s``,
            ``ticket_retry_attempts``.

    Raises:
        bot.errors.ConfigError: when one of them is missing.
    """

    name = "jira"

    def __init__(self, settings: Settings) -> None:
        missing = [
            name
            for name in (
                "jira_url",
                "jira_email",
                "jira_api_token",
                "jira_service_desk_id",
                "jira_request_type_id",
            )
            if getattr(settings, name) in (None, "")
        ]
        if missing:
            raise ConfigError(f"ticket_backend jira needs {', '.join(missing)}")
        assert settings.jira_url is not None
        assert settings.jira_email is not None
        assert settings.jira_api_token is not None
        self._settings = settings
        self._site = settings.jira_url.rstrip("/")
        self._desk = str(settings.jira_service_desk_id)
        self._request_type = str(settings.jira_request_type_id)
        self._project: str | None = None
        self._client = JIRA(
            server=self._site,
            basic_auth=(settings.jira_email, settings.jira_api_token.get_secret_value()),
            get_server_info=False,
            max_retries=0,
            timeout=settings.ticket_timeout_s,
            options={"check_update": False},
        )
        # Jira Service Management Cloud, without the server-info round trip at start: the SDK
        # refuses its Cloud-only calls (the enhanced search of find) unless it knows.
        self._client.deploymentType = "Cloud"

    async def _call(self, fn: Callable[[], T]) -> T:
        return await call_remote(
            _converting(fn),
            max_wait_s=self._settings.ticket_retry_max_wait_s,
            attempts=self._settings.ticket_retry_attempts,
        )

    async def create(
        self, *, subject: str, description: str, requester: Participant, priority: str, ref: str
    ) -> RemoteTicket:
        """Raise a customer request on the configured service desk and request type.

        The request is raised on behalf of the customer when the channel gave an e-mail
        address (a Jira Service Management customer), else by the API user.
        """
        fields: dict[str, Any] = {
            "serviceDeskId": self._desk,
            "requestTypeId": int(self._request_type)
            if self._request_type.isdigit()
            else self._request_type,
            "requestFieldValues": {
                "summary": subject,
                "description": f"{description}\n\n{REFERENCE_LINE.format(ref=ref)}",
            },
        }
        if requester.email:
            fields["raiseOnBehalfOf"] = requester.email

        def run() -> str:
            issue = self._client.create_customer_request(fields=fields, prefetch=False)
            return str(issue.raw["issueKey"])

        key = await self._call(run)
        log.info("jira.request_created", extra={"ticket_id": key, "ref": ref})
        try:
            found = await self.get(key)
        except (BackendUnavailable, RateLimited):
            found = None  # created: never report a failure that would create it again
        return found or RemoteTicket(
            id=key,
            subject=subject,
            description=description,
            status="open",
            priority=priority,
            comments=(),
            created_at=datetime.now(UTC),
            url=f"{self._site}/browse/{key}",
        )

    async def find(self, ref: str) -> RemoteTicket | None:
        """The request raised for hub reference ``ref``, or None (see the module).

        JQL: the reference as a phrase in the text of the service desk's project's issues; a
        hit counts only when its description holds the exact reference line.

        Raises:
            bot.errors.BackendUnavailable, bot.errors.RateLimited: as every call.
        """
        project = await self._project_key()
        quoted = ref.replace("\\", "").replace('"', "")
        jql = f'project = "{project}" AND text ~ "\\"{quoted}\\"" ORDER BY created DESC'

        def run() -> list[str]:
            found = self._client.enhanced_search_issues(
                jql, maxResults=10, fields=[], json_result=True
            )
            assert isinstance(found, dict)
            return [str(i.get("key") or i.get("id")) for i in found.get("issues", [])]

        line = REFERENCE_LINE.format(ref=ref)
        for key in await self._call(run):
            ticket = await self.get(key)
            if ticket is not None and line in ticket.description.splitlines():
                return ticket
        return None

    async def _project_key(self) -> str:
        """The key of the service desk's project (``GET /rest/servicedeskapi/servicedesk/{id}``).

        Raises:
            bot.errors.PayloadInvalid: when the service desk names no project.
        """
        if self._project is None:
            desk = await self._call(lambda: self._client.service_desk(self._desk))
            key = str(getattr(desk, "projectKey", "") or "")
            if not key:
                raise PayloadInvalid(f"service desk {self._desk} names no project")
            self._project = key
        return self._project

    async def get(self, remote_id: str) -> RemoteTicket | None:
        """The issue with its comments (``GET /rest/api/2/issue/{key}``); None when unknown."""

        def run() -> dict[str, Any]:
            raw: dict[str, Any] = self._client.issue(
                remote_id, fields="summary,description,status,priority,created,comment"
            ).raw
            return raw

        try:
            return self._remote(await self._call(run))
        except NotFound:
            return None

    async def comment(self, remote_id: str, author: str, text: str) -> None:
        """Add an internal comment ``author: text`` (agents see it, the customer does not)."""
        await self._call(
            lambda: self._client.add_comment(remote_id, f"{author}: {text}", is_internal=True)
        )

    async def set_status(self, remote_id: str, status: str) -> None:
        """Take the first transition leading to the status's category (``done`` for solved).

        Raises:
            bot.errors.PayloadInvalid: for an unknown status, or when no transition of the
                workflow leads there.
            bot.errors.NotFound: when the issue does not exist.
        """
        categories = TARGET_CATEGORY.get(status)
        if categories is None:
            raise PayloadInvalid(f"unknown status {status!r}", field="status")

        def run() -> None:
            issue = self._client.issue(remote_id, fields="status")
            current = issue.raw["fields"]["status"]["statusCategory"]["key"]
            if current == categories[0]:
                return
            options = self._client.transitions(remote_id)
            for category in categories:
                for transition in options:
                    if transition["to"]["statusCategory"]["key"] == category:
                        self._client.transition_issue(remote_id, str(transition["id"]))
                        return
            raise PayloadInvalid(f"no Jira transition of {remote_id} leads to {status}")

        await self._call(run)

    async def check(self) -> BackendCheck:
        """``GET /rest/api/2/myself`` and the service desk: reachable and authorized."""
        try:
            me = await self._call(self._client.myself)
            desk = await self._call(lambda: self._client.service_desk(self._desk))
        except SwitchboardError as exc:
            return BackendCheck("jira", False, f"{self._site}: {_explain(exc)}")
        who = me.get("accountType", "user")
        name = getattr(desk, "projectName", None) or self._desk
        return BackendCheck(
            "jira", True, f"{self._site}: signed in ({who}), service desk {name} visible"
        )

    async def close(self) -> None:
        """Close the SDK's HTTP session."""
        self._client.close()  # type: ignore[no-untyped-call]

    def _remote(self, raw: dict[str, Any]) -> RemoteTicket:
        fields = raw.get("fields") or {}
        category = ((fields.get("status") or {}).get("statusCategory") or {}).get("key", "new")
        status = "solved" if category == "done" else "open"
        priority_name = str((fields.get("priority") or {}).get("name", "medium")).lower()
        comments = ((fields.get("comment") or {}).get("comments")) or []
        return RemoteTicket(
            id=str(raw["key"]),
            subject=str(fields.get("summary") or ""),
            description=str(fields.get("description") or ""),
            status=status,
            priority=TO_HUB_PRIORITY.get(priority_name, "normal"),
            comments=tuple(
                (
                    str((c.get("author") or {}).get("displayName") or "jira"),
                    str(c.get("body") or ""),
                    _time(c.get("created")),
                )
                for c in comments
            ),
            created_at=_time(fields.get("created")),
            url=f"{self._site}/browse/{raw['key']}",
        )


def _time(value: Any) -> datetime:
    """Jira's ``2026-12-06T10:00:00.000+0000`` as an aware datetime (now when absent)."""
    if isinstance(value, str) and value:
        text = value.replace("Z", "+00:00")
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        return datetime.fromisoformat(text)
    return datetime.now(UTC)


def _converting(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with the SDK's and requests' errors turned into :mod:`bot.errors` types."""

    def run() -> T:
        try:
            return fn()
        except JIRAError as exc:
            status = exc.status_code or 0
            if status == 429:
                headers = exc.response.headers if exc.response is not None else {}
                wait = retry_after_seconds(headers.get("Retry-After"))
                raise RateLimited("Jira answered 429", retry_after=wait) from exc
            raise error_for_status("Jira", status) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise BackendUnavailable(f"Jira unreachable: {type(exc).__name__}") from exc

    return run


def _explain(exc: SwitchboardError) -> str:
    if isinstance(exc, Unauthorized):
        return "401 unauthorized: check jira_email and jira_api_token"
    if isinstance(exc, Forbidden):
        return "403 forbidden: the API user needs the Service Desk Team role on the project"
    if isinstance(exc, NotFound):
        return "404: check jira_service_desk_id (the API user must see the service desk)"
    if isinstance(exc, RateLimited):
        return f"rate limited (retry after {exc.retry_after:g} s)"
    return f"unreachable: {exc}"
