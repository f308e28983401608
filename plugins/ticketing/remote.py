"""What an external ticket system (Zendesk, Jira Service Management) offers the hub.

:class:`RemoteTickets` is the narrow client each product implements with its own SDK
(``zenpy``, ``jira``); :class:`~plugins.ticketing.synced.SyncedTicketBackend` builds the
:class:`bot.tools.TicketBackend` the hub uses on top of it (authorization data and deferred
creations live in the hub's database, never in the product's editable fields).

The SDKs are synchronous: every call runs in a worker thread (:func:`call_remote`), and a 429
whose ``Retry-After`` is short is waited out by tenacity before :class:`~bot.errors.RateLimited`
reaches the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from bot.envelope import Participant
from bot.errors import (
    BackendUnavailable,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
    SwitchboardError,
    Unauthorized,
    parse_retry_after,
)
from bot.tools import BackendCheck

T = TypeVar("T")

DEFAULT_RETRY_AFTER_S: Final = 1.0
"""Seconds to wait after a 429 without a usable ``Retry-After`` header."""


@dataclass(frozen=True, slots=True)
class RemoteTicket:
    """A ticket as the external system holds it.

    Attributes:
        id: the product's id (Zendesk ``"123"``, Jira ``"SUP-12"``).
        subject: its subject (Jira: summary).
        description: its description (Zendesk: the first comment).
        status: mapped to ``open``, ``pending``, ``solved`` or ``closed``.
        priority: mapped to ``low``, ``normal``, ``high`` or ``urgent``.
        comments: ``(author, text, created_at)``, oldest first.
        created_at: creation time (UTC).
        url: the agent's view of the ticket.
    """

    id: str
    subject: str
    description: str
    status: str
    priority: str
    comments: tuple[tuple[str, str, datetime], ...]
    created_at: datetime
    url: str | None


class RemoteTickets(Protocol):
    """One external ticket system, through its SDK.

    Every method raises :class:`~bot.errors.BackendUnavailable` when the system cannot be
    reached (network, 5xx), :class:`~bot.errors.RateLimited` on a 429 that outlasts the retry
    budget, :class:`~bot.errors.Unauthorized` for rejected credentials.
    """

    name: str
    """``zendesk`` or ``jira``: the backend's name in settings, links and logs."""

    async def create(
        self, *, subject: str, description: str, requester: Participant, priority: str, ref: str
    ) -> RemoteTicket:
        """Open a ticket; ``ref`` is the hub's reference (kept where the product allows)."""

    async def find(self, ref: str) -> RemoteTicket | None:
        """The ticket created earlier for ``ref`` (idempotent re-creation), if it can tell."""

    async def get(self, remote_id: str) -> RemoteTicket | None:
        """A ticket by the product's id; None when it does not exist."""

    async def comment(self, remote_id: str, author: str, text: str) -> None:
        """Add an internal comment (agents see it; the customer is not e-mailed).

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
        """

    async def set_status(self, remote_id: str, status: str) -> None:
        """Move the ticket to ``open``, ``pending``, ``solved`` or ``closed``.

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
        """

    async def check(self) -> BackendCheck:
        """Whether the system is reachable and the credentials authorized (never raises)."""

    async def close(self) -> None:
        """Release the SDK's HTTP session."""


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float:
    """The wait a ``Retry-After`` header asks for (:func:`bot.errors.parse_retry_after`).

    Returns:
        Seconds to wait, at least 0; :data:`DEFAULT_RETRY_AFTER_S` when it says nothing usable.
    """
    return parse_retry_after(value, default=DEFAULT_RETRY_AFTER_S, now=now)


def error_for_status(product: str, status: int) -> SwitchboardError:
    """The :mod:`bot.errors` type of a product's HTTP error ``status`` (0: none known).

    401 → :class:`Unauthorized`, 403 → :class:`Forbidden`, 404 → :class:`NotFound`,
    400 and 422 → :class:`PayloadInvalid` (carrying the status), anything else →
    :class:`BackendUnavailable`. A 429 is the caller's (it carries ``Retry-After``).
    """
    if status == 401:
        return Unauthorized(f"{product} rejected the credentials (401)")
    if status == 403:
        return Forbidden(f"{product} refused the API user (403)")
    if status == 404:
        return NotFound(f"{product}: not found (404)")
    if status in (400, 422):
        return PayloadInvalid(f"{product} refused the request ({status})", status=status)
    return BackendUnavailable(f"{product} answered {status or 'an error'}")


def _wait_retry_after(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.retry_after if isinstance(exc, RateLimited) else DEFAULT_RETRY_AFTER_S


async def call_remote(fn: Callable[[], T], *, max_wait_s: float, attempts: int) -> T:
    """Run a blocking SDK call in a thread, waiting out short rate limits (tenacity).

    The SDK's own timeout (``ticket_timeout_s``) bounds each attempt.

    Args:
        fn: the call; it raises :mod:`bot.errors` types (its backend converts SDK errors).
        max_wait_s: a 429 asking to wait longer than this fails at once.
        attempts: calls in all (1: no retry).

    Returns:
        What ``fn`` returned.

    Raises:
        bot.errors.RateLimited: the last 429, or one asking for more than ``max_wait_s``.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception(
            lambda exc: isinstance(exc, RateLimited) and exc.retry_after <= max_wait_s
        ),
        wait=_wait_retry_after,
        stop=stop_after_attempt(max(1, attempts)),
        reraise=True,
    )
    return await retrying(asyncio.to_thread, fn)
