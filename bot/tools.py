"""Agent tools: the :class:`Tool` protocol, its :class:`ToolContext`, and ticket backends.

A tool is a name, a description, a pydantic argument model and an async call. It receives a
:class:`ToolContext` holding the session's customer identity as the channel verified it; a tool
authorizes from the context, never from arguments the model wrote (a customer sees only their
own tickets, whatever id the model asks for).
"""

from __future__ import annotations

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


EscalateFn = Callable[[str, str], Awaitable[None]]
"""``escalate(reason, summary)``: put the session on the human queue."""


@dataclass(slots=True)
class ToolContext:
    """What a tool may know and use during one turn.

    Attributes:
        session_key: the conversation.
        channel: its channel.
        customer: the customer as the channel verified it (``customer.verified``).
        retriever: the knowledge base.
        tickets: the ticket backend.
        escalate: hands the session to the human queue.
        max_citations: citations to keep per answer.
        citations: citations gathered by tools during the turn (the agent attaches them).
        escalated: set when a tool escalated during the turn.
    """

    session_key: SessionKey
    channel: str
    customer: Participant
    retriever: Retriever
    tickets: TicketBackend
    escalate: EscalateFn
    max_citations: int = 3
    citations: list[Citation] = field(default_factory=list)
    escalated: bool = False


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
