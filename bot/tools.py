"""Agent tools: the :class:`Tool` protocol, its :class:`ToolContext`, and ticket backends.

A tool is a name, a description, a pydantic argument model and an async call. It receives a
:class:`ToolContext` holding the session's customer identity as the channel verified it; a tool
authorizes from the context, never from arguments the model wrote (a customer sees only their
own tickets, whatever id the model asks for).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from bot.envelope import Citation, Participant, SessionKey
from bot.retrieval import Retriever


@dataclass(frozen=True, slots=True)
class Ticket:
    """A support ticket.

    Attributes:
        id: backend id (``T-000123`` locally, the remote id on Zendesk/Jira...).
        subject: one-line subject.
        description: first description (escalations put the transcript here).
        status: ``open``, ``pending``, ``solved`` or ``closed``.
        priority: ``low``, ``normal``, ``high`` or ``urgent``.
        requester_id: the customer's platform id (authorization key).
        requester_channel: channel the requester is known on.
        session_key: the conversation it came from, if any.
        comments: comments, oldest first, as ``(author, text, created_at)``.
        created_at: creation time (UTC).
        url: where a human can open it, when the backend has one.
        queued: the external system (Zendesk, Jira) was unreachable: the ticket is kept in
            the hub's database under this id and created there once it is back.
    """

    id: str
    subject: str
    description: str
    status: str
    priority: str
    requester_id: str
    requester_channel: str
    session_key: str | None
    comments: tuple[tuple[str, str, datetime], ...]
    created_at: datetime
    url: str | None = None
    queued: bool = False


class TicketBackend(Protocol):
    """Where tickets live (local SQLite store by default; Zendesk, Jira... as plugins)."""

    async def create(
        self,
        *,
        subject: str,
        description: str,
        requester: Participant,
        channel: str,
        session_key: SessionKey | None,
        priority: str = "normal",
    ) -> Ticket:
        """Open a ticket for ``requester``."""

    async def get(self, ticket_id: str) -> Ticket | None:
        """A ticket by id (no authorization here: callers check ``requester_id``)."""

    async def list_for(self, requester_id: str, channel: str, limit: int = 20) -> list[Ticket]:
        """The requester's tickets, newest first."""

    async def comment(self, ticket_id: str, author: str, text: str) -> Ticket:
        """Add a comment.

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
        """

    async def set_status(self, ticket_id: str, status: str) -> Ticket:
        """Change a ticket's status.

        Raises:
            bot.errors.NotFound: when the ticket does not exist.
        """


@dataclass(frozen=True, slots=True)
class BackendCheck:
    """What ``switchboard doctor`` reports for one configured external system.

    Attributes:
        name: the system as the user configured it (``zendesk``, ``jira``, ``hubspot``,
            ``salesforce``, ``mcp:<server>``, ``local``).
        ok: reachable and authorized (a call that needs the configured credentials succeeded).
        detail: one human-readable line: what was checked, or what failed and what to fix
            (never a secret).
    """

    name: str
    ok: bool
    detail: str


CheckFn = Callable[[], Awaitable[BackendCheck]]
"""A reachability and authorization probe of one external system; never raises."""


# --- CRM (issue 12 part B) -------------------------------------------------------------------
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True, slots=True)
class CustomerIdentity:
    """Who the customer is, as far as their channel proved it: the only key of a CRM lookup.

    Attributes:
        channel: the channel the customer writes on.
        platform_id: their id on that channel.
        email: their e-mail address, when the channel knows it.
        phone: their phone number in E.164 (``+15551234567``), when the platform id is one
            (SMS, WhatsApp, voice).
        verified: True when the channel verified the identity (``Participant.verified``).
    """

    channel: str
    platform_id: str
    email: str | None
    phone: str | None
    verified: bool

    @property
    def platform_key(self) -> str:
        """``{channel}:{platform_id}``, the value a CRM's platform-id field holds."""
        return f"{self.channel}:{self.platform_id}"

    @classmethod
    def of(cls, customer: Participant, channel: str) -> CustomerIdentity:
        """The identity of ``customer`` on ``channel`` (e-mail lower-cased, phone if E.164)."""
        phone = customer.id if _E164.match(customer.id) else None
        email = customer.email.strip().lower() if customer.email else None
        return cls(channel, customer.id, email, phone, customer.verified)


@dataclass(frozen=True, slots=True)
class CrmContact:
    """A customer's record in the CRM, as the agent and the console see it.

    Attributes:
        id: the CRM's record id (HubSpot contact id, Salesforce Contact Id).
        name: full name, when the record has one.
        email: primary e-mail.
        phone: phone number as stored.
        company: the company or account name.
        plan: the value of the configured plan field (``crm_plan_field``), if any.
        owner: the record's owner (account manager), by name or id.
        url: where a human opens the record, when known.
    """

    id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    plan: str | None = None
    owner: str | None = None
    url: str | None = None


OPEN_TICKET_STATUSES = ("open", "pending")
"""Ticket statuses the customer panel and ``lookup_customer`` count as open."""


class CrmBackend(Protocol):
    """Where customer records live (HubSpot, Salesforce: ``plugins/crm/``)."""

    name: str
    """The backend as the user configured it (``hubspot``, ``salesforce``)."""

    async def find_contact(self, identity: CustomerIdentity) -> CrmContact | None:
        """The contact matching ``identity``: by e-mail, else phone, else platform id.

        No authorization here: callers pass only a verified identity.

        Raises:
            bot.errors.RateLimited: the CRM answered 429 (``retry_after`` from Retry-After).
            bot.errors.BackendUnavailable: the CRM cannot be reached or refused the call.
        """

    async def check(self) -> BackendCheck:
        """Reachability and authorization probe for ``switchboard doctor``; never raises."""

    async def close(self) -> None:
        """Release connections."""


EscalateFn = Callable[[str, str], Awaitable[None]]
"""``escalate(reason, summary)``: put the session on the human queue."""

ToolAuditFn = Callable[[str, str], Awaitable[None]]
"""``record(tool, outcome)``: append a tool call to the audit log (``outcome``: ``done``,
``refused`` or ``failed``; never the arguments, which may hold personal data)."""


@dataclass(slots=True)
class ToolContext:
    """What a tool may know and use during one turn.

    Attributes:
        session_key: the conversation.
        channel: its channel.
        customer: the customer as the channel verified it (``customer.verified``).
        retriever: the knowledge base.
        tickets: the ticket backend.
        crm: the CRM backend, when one is configured (``crm_backend``).
        escalate: hands the session to the human queue.
        max_citations: citations to keep per answer.
        citations: citations gathered by tools during the turn (the agent attaches them).
        escalated: set when a tool escalated during the turn.
        audit: records each tool call in the audit log (the router sets it; None in tests
            that need no log).
    """

    session_key: SessionKey
    channel: str
    customer: Participant
    retriever: Retriever
    tickets: TicketBackend
    escalate: EscalateFn
    max_citations: int = 3
    crm: CrmBackend | None = None
    citations: list[Citation] = field(default_factory=list)
    escalated: bool = False
    audit: ToolAuditFn | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns.

    Attributes:
        content: JSON-serializable data the model reads.
        citations: documents the content came from.
    """

    content: Any
    citations: Sequence[Citation] = ()


class Tool(Protocol):
    """An agent tool (entry point group ``switchboard.tools``)."""

    name: ClassVar[str]
    description: ClassVar[str]
    args_model: ClassVar[type[BaseModel]]

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Run the tool.

        Raises:
            bot.errors.ToolFailed: when the tool cannot do its work (the model is told).
            bot.errors.Forbidden: when the customer may not do this.
        """
