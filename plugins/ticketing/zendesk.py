"""Zendesk Support through ``zenpy``: tickets, internal comments, status, and the doctor's probe.

Wire format: Zendesk Support REST API v2 (https://developer.zendesk.com/api-reference/ticketing/
tickets/tickets/): ``POST /api/v2/tickets.json`` (the ticket with its first comment, private,
``external_id`` = the hub's reference), ``GET /api/v2/tickets/{id}.json``, ``GET
/api/v2/tickets/{id}/comments.json``, ``PUT /api/v2/tickets/{id}.json`` (a comment or a status),
``GET /api/v2/tickets.json?external_id=`` and ``GET /api/v2/users/me.json``. Authentication is
``{email}/token:{api_token}`` in HTTP Basic.

zenpy is synchronous: calls run in a thread (:func:`~plugins.ticketing.remote.call_remote`). Its
own 429 loop sleeps one second at a time and cannot report the wait, so the HTTP session given
to it raises :class:`~bot.errors.RateLimited` (with ``Retry-After``) first; tenacity waits out
short limits. The session also maps ``https://{subdomain}.zendesk.com`` to ``zendesk_url`` when
that is set (a sandbox, or the tests' fake server).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import requests
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment as ZComment
from zenpy.lib.api_objects import Ticket as ZTicket
from zenpy.lib.api_objects import User as ZUser
from zenpy.lib.exception import APIException, RecordNotFoundException, ZenpyException

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

TO_HUB_STATUS: Final = {
    "new": "open",
    "open": "open",
    "pending": "pending",
    "hold": "pending",
    "solved": "solved",
    "closed": "closed",
}
"""Zendesk status → hub status."""

TO_ZENDESK_STATUS: Final = {
    "open": "open",
    "pending": "pending",
    "solved": "solved",
    "closed": "solved",
}
"""Hub status → Zendesk status (the API cannot close a ticket: Zendesk closes solved ones)."""


class _ZendeskSession(requests.Session):
    """The HTTP session zenpy uses: a base URL override, a timeout, 429 → RateLimited."""

    def __init__(self, origin: str, base_url: str | None, timeout_s: float) -> None:
        super().__init__()
        self._origin = origin
        self._base = base_url.rstrip("/") if base_url else None
        self._timeout = timeout_s

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        asked = url.decode() if isinstance(url, bytes) else url
        url = asked
        if self._base is not None and url.startswith(self._origin):
            url = self._base + url[len(self._origin) :]
        kwargs["timeout"] = self._timeout
        verb = method.decode() if isinstance(method, bytes) else method
        response = super().request(verb, url, *args, **kwargs)
        if response.request is not None:
            # zenpy deserializes only responses whose request URL names its Zendesk host.
            response.request.url = asked
        if response.status_code == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            raise RateLimited("Zendesk answered 429", retry_after=wait)
        return response


class ZendeskTickets:
    """:class:`~plugins.ticketing.remote.RemoteTickets` on Zendesk Support.

    Args:
        settings: ``zendesk_subdomain`` or ``zendesk_url``, ``zendesk_email``,
            ``zendesk_api_token``, ``ticket_timeout_s``, ``ticket_retry_max_wait_s``,
            ``ticket_retry_attempts``.

    Raises:
        bot.errors.ConfigError: when the URL, e-mail or token is missing.
    """

    name = "zendesk"

    def __init__(self, settings: Settings) -> None:
        if not (settings.zendesk_subdomain or settings.zendesk_url):
            raise ConfigError("ticket_backend zendesk needs zendesk_subdomain or zendesk_url")
        if not settings.zendesk_email or settings.zendesk_api_token is None:
            raise ConfigError("ticket_backend zendesk needs zendesk_email and zendesk_api_token")
        subdomain = settings.zendesk_subdomain or "switchboard"
        self._site = (settings.zendesk_url or f"https://{subdomain}.zendesk.com").rstrip("/")
        self._settings = settings
        self._session = _ZendeskSession(
            f"https://{subdomain}.zendesk.com", settings.zendesk_url, settings.ticket_timeout_s
        )
        self._client = Zenpy(
            subdomain=subdomain,
            email=settings.zendesk_email,
            token=settings.zendesk_api_token.get_secret_value(),
            session=self._session,
            timeout=settings.ticket_timeout_s,
            disable_cache=True,
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        return await call_remote(
            _converting(fn),
            max_wait_s=self._settings.ticket_retry_max_wait_s,
            attempts=self._settings.ticket_retry_attempts,
        )

    async def create(
        self, *, subject: str, description: str, requester: Participant, priority: str, ref: str
    ) -> RemoteTicket:
        """Open a ticket whose first comment (private) is ``description``; ``external_id=ref``.

        The requester is the customer when the channel gave an e-mail address (Zendesk finds
        or creates that end user), else the API user.
        """
        ticket = ZTicket(
            subject=subject,
            comment=ZComment(body=description, public=False),
            priority=priority,
            external_id=ref,
            tags=["switchboard"],
        )
        if requester.email:
            ticket.requester = ZUser(name=requester.name or requester.email, email=requester.email)

        def run() -> RemoteTicket:
            audit = self._client.tickets.create(ticket)
            return self._remote(audit.ticket, [])

        created = await self._call(run)
        log.info("zendesk.ticket_created", extra={"ticket_id": created.id, "ref": ref})
        return created

    async def find(self, ref: str) -> RemoteTicket | None:
        """The ticket whose ``external_id`` is ``ref``.

        ``GET /api/v2/tickets.json?external_id=``.
        """

        def run() -> RemoteTicket | None:
            for found in self._client.tickets(external_id=ref):
                return self._remote(found, [])
            return None

        return await self._call(run)

    async def get(self, remote_id: str) -> RemoteTicket | None:
        """The ticket and its comments; None when Zendesk does not know it."""
        if not remote_id.isdigit():
            return None

        def run() -> RemoteTicket:
            found = self._client.tickets(id=int(remote_id))
            comments = list(self._client.tickets.comments(ticket=int(remote_id)))
            return self._remote(found, comments)

        try:
            return await self._call(run)
        except NotFound:
            return None

    async def comment(self, remote_id: str, author: str, text: str) -> None:
        """Add a private comment ``author: text`` (``PUT /api/v2/tickets/{id}.json``)."""
        self._must_be_id(remote_id)

        def run() -> None:
            self._client.tickets.update(
                ZTicket(
                    id=int(remote_id), comment=ZComment(body=f"{author}: {text}", public=False)
                )
            )

        await self._call(run)

    async def set_status(self, remote_id: str, status: str) -> None:
        """Set ``open``, ``pending`` or ``solved`` (``closed`` is sent as ``solved``)."""
        self._must_be_id(remote_id)
        target = TO_ZENDESK_STATUS.get(status)
        if target is None:
            raise PayloadInvalid(f"unknown status {status!r}", field="status")

        def run() -> None:
            self._client.tickets.update(ZTicket(id=int(remote_id), status=target))

        await self._call(run)

    async def check(self) -> BackendCheck:
        """``GET /api/v2/users/me.json``: reachable, and the token belongs to an agent."""
        try:
            me = await self._call(self._me)
        except SwitchboardError as exc:
            return BackendCheck("zendesk", False, f"{self._site}: {_explain(exc)}")
        role = me.get("role")
        if me.get("id") is None or role not in ("agent", "admin"):
            return BackendCheck(
                "zendesk",
                False,
                f"{self._site}: the API user is {role or 'anonymous'}, tickets need an agent"
                " or admin (check zendesk_email and zendesk_api_token)",
            )
        return BackendCheck("zendesk", True, f"{self._site}: signed in as a Zendesk {role}")

    def _me(self) -> dict[str, Any]:
        """``users/me`` as a dict (zenpy hands back the raw response for this endpoint)."""
        me = self._client.users.me()
        if isinstance(me, requests.Response):
            user: dict[str, Any] = me.json().get("user") or {}
            return user
        return {"id": getattr(me, "id", None), "role": getattr(me, "role", None)}

    async def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _must_be_id(remote_id: str) -> None:
        if not remote_id.isdigit():
            raise NotFound(f"no Zendesk ticket {remote_id!r}")

    def _remote(self, ticket: Any, comments: list[Any]) -> RemoteTicket:
        created = _time(getattr(ticket, "created_at", None))
        return RemoteTicket(
            id=str(ticket.id),
            subject=ticket.subject or "",
            description=ticket.description or "",
            status=TO_HUB_STATUS.get(ticket.status or "open", "open"),
            priority=ticket.priority or "normal",
            comments=tuple(
                (f"zendesk user {c.author_id}", c.body or "", _time(c.created_at))
                for c in comments[1:]  # the first comment is the description
            ),
            created_at=created,
            url=f"{self._site}/agent/tickets/{ticket.id}",
        )


def _time(value: Any) -> datetime:
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)


def _converting(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with zenpy's and requests' errors turned into :mod:`bot.errors` types."""

    def run() -> T:
        try:
            return fn()
        except RecordNotFoundException as exc:
            raise NotFound("Zendesk: no such record") from exc
        except APIException as exc:
            raise error_for_status("Zendesk", getattr(exc.response, "status_code", 0)) from exc
        except requests.HTTPError as exc:
            raise error_for_status("Zendesk", getattr(exc.response, "status_code", 0)) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise BackendUnavailable(f"Zendesk unreachable: {type(exc).__name__}") from exc
        except ZenpyException as exc:
            raise BackendUnavailable(f"Zendesk client error: {exc}") from exc

    return run


def _explain(exc: SwitchboardError) -> str:
    if isinstance(exc, Unauthorized):
        return "401 unauthorized: check zendesk_email and zendesk_api_token"
    if isinstance(exc, Forbidden):
        return "403 forbidden: the API user may not use the API"
    if isinstance(exc, RateLimited):
        return f"rate limited (retry after {exc.retry_after:g} s)"
    return f"unreachable: {exc}"
