"""What every console handler needs: the hub, the JSON body, and the acting account.

:func:`actor` is the one door to the logged-in account: it checks the session, the CSRF token
on state-changing calls and the account's role (:func:`bot.auth.require`), so no handler can
forget the role check.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from bot import auth
from bot.auth import Permission
from bot.config import Settings
from bot.errors import PayloadInvalid, PayloadTooLarge
from bot.events import EventBus
from bot.handoff import Handoff
from bot.payload import check_text_bytes
from bot.store.base import AgentAccount, Store
from bot.subjects import SubjectRequests
from bot.tools import CrmBackend, TicketBackend


class ConsoleHub(Protocol):
    """What the console needs of the hub (:class:`bot.hub.Hub` has it)."""

    @property
    def settings(self) -> Settings:
        """The hub's settings."""

    @property
    def store(self) -> Store:
        """Conversations, messages and agent accounts."""

    @property
    def events(self) -> EventBus:
        """The hub's event feed (the SSE stream subscribes to it)."""

    @property
    def handoff(self) -> Handoff:
        """The human queue and agents' actions."""

    @property
    def tickets(self) -> TicketBackend:
        """The ticket backend (the customer panel lists open tickets)."""

    @property
    def crm(self) -> CrmBackend | None:
        """The CRM backend of the customer panel (None: no CRM configured)."""

    def subject_requests(self) -> SubjectRequests:
        """Data-subject export and erasure (the Audit & privacy page).

        Raises:
            bot.errors.BackendUnavailable: when the store is not the SQL store.
        """


HUB_KEY = web.AppKey("switchboard_console_hub", ConsoleHub)


def hub_of(request: web.Request) -> ConsoleHub:
    """The hub the console application was built for."""
    return request.app[HUB_KEY]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; only ``application/json`` is accepted (CSRF defence).

    Raises:
        PayloadInvalid: another content type, malformed JSON, or not an object.
        PayloadTooLarge: more than ``settings.max_body_bytes``.
    """
    if request.content_type != "application/json":
        raise PayloadInvalid("send application/json", field="content-type")
    limit = hub_of(request).settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("body too large", limit_bytes=limit)
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge("body too large", limit_bytes=limit)
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise PayloadInvalid(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadInvalid("the body must be a JSON object")
    return data


def text_field(request: web.Request, data: dict[str, Any], name: str = "text") -> str:
    """A required, non-blank string field of at most ``settings.max_message_bytes``.

    Raises:
        PayloadInvalid: missing, not a string or blank (``field`` is ``name``).
        PayloadTooLarge: too long.
    """
    text = data.get(name)
    if not isinstance(text, str) or not text.strip():
        raise PayloadInvalid(f"{name} must be a non-empty string", field=name)
    check_text_bytes(text, hub_of(request).settings.max_message_bytes)
    return text


async def actor(
    request: web.Request, permission: Permission, *, csrf: bool | None = None
) -> AgentAccount:
    """The logged-in account, allowed ``permission``.

    Args:
        request: the console request.
        permission: what the call needs (:class:`bot.auth.Permission`).
        csrf: require the CSRF header; by default for every method but GET and HEAD.

    Raises:
        bot.errors.Unauthorized: not logged in, or the account was disabled (401).
        bot.auth.CsrfFailed: missing or wrong CSRF token (403).
        bot.auth.RoleForbidden: the account's role lacks ``permission`` (403).
    """
    account, session = await auth.session_agent(request, hub_of(request).store)
    if csrf if csrf is not None else request.method not in ("GET", "HEAD"):
        auth.check_csrf(request, session)
    auth.require(account, permission)
    return account


def agent_json(account: AgentAccount) -> dict[str, Any]:
    """An account as the console API shows it (never the password hash)."""
    return {
        "name": account.name,
        "display_name": account.display_name,
        "role": account.role.value,
        "active": account.active,
    }
