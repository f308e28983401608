"""Ticket tools: ``create_ticket``, ``get_ticket``, ``add_ticket_comment``.

Authorization comes from the :class:`~bot.tools.ToolContext` only, never from the arguments
the model wrote:

- ``create_ticket`` always opens the ticket for ``ctx.customer`` on ``ctx.channel`` (fields the
  model adds, such as a requester, are ignored).
- ``get_ticket`` and ``add_ticket_comment`` refuse (:class:`~bot.errors.Forbidden`) a ticket
  whose requester or channel differ from the context's, and, for a customer whose identity the
  channel did not verify, any ticket not opened in this same session.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from bot.errors import BackendUnavailable, Forbidden, NotFound, ToolFailed
from bot.tools import Ticket, ToolContext, ToolResult

MAX_COMMENTS = 10
"""``get_ticket`` shows at most this many comments (the latest)."""


def ticket_view(ticket: Ticket) -> dict[str, Any]:
    """A ticket as the model sees it (JSON-serializable; times in ISO 8601)."""
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "created_at": ticket.created_at.isoformat(),
        "url": ticket.url,
    }


def authorize(ticket: Ticket | None, ticket_id: str, ctx: ToolContext, tool: str) -> Ticket:
    """The ticket, if the context's customer may see it.

    Raises:
        bot.errors.ToolFailed: when no such ticket exists.
        bot.errors.Forbidden: when it belongs to someone else, or the customer is unverified
            and it was not opened in this session.
    """
    if ticket is None:
        raise ToolFailed(tool, f"no ticket {ticket_id!r}")
    if ticket.requester_id != ctx.customer.id or ticket.requester_channel != ctx.channel:
        raise Forbidden(f"ticket {ticket_id} belongs to another customer")
    if not ctx.customer.verified and ticket.session_key != ctx.session_key:
        raise Forbidden(
            f"ticket {ticket_id} was not opened in this conversation and the customer's "
            "identity is not verified"
        )
    return ticket


class CreateTicketArgs(BaseModel):
    """Arguments of ``create_ticket`` (extra fields, e.g. a requester, are ignored)."""

    subject: str = Field(min_length=1, max_length=200, description="One-line subject.")
    description: str = Field(
        min_length=1, max_length=8000, description="The problem, in the customer's terms."
    )
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class CreateTicket:
    """Open a ticket for the session's customer. Content: the ticket (:func:`ticket_view`)."""

    name: ClassVar[str] = "create_ticket"
    description: ClassVar[str] = (
        "Open a support ticket for the current customer (follow-up by the support team). "
        "Returns the ticket id."
    )
    args_model: ClassVar[type[BaseModel]] = CreateTicketArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Create the ticket.

        Raises:
            bot.errors.ToolFailed: when the ticket backend is unavailable.
        """
        a = CreateTicketArgs.model_validate(args)
        try:
            ticket = await ctx.tickets.create(
                subject=a.subject,
                description=a.description,
                requester=ctx.customer,
                channel=ctx.channel,
                session_key=ctx.session_key,
                priority=a.priority,
            )
        except BackendUnavailable as exc:
            raise ToolFailed(self.name, exc) from exc
        return ToolResult(content=ticket_view(ticket))


class GetTicketArgs(BaseModel):
    """Arguments of ``get_ticket``."""

    ticket_id: str = Field(min_length=1, max_length=100, description="The ticket id.")


class GetTicket:
    """Read one of the customer's tickets: :func:`ticket_view` plus the latest comments."""

    name: ClassVar[str] = "get_ticket"
    description: ClassVar[str] = "Look up one of the current customer's tickets by id."
    args_model: ClassVar[type[BaseModel]] = GetTicketArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Read the ticket.

        Raises:
            bot.errors.Forbidden: when the customer may not see it.
            bot.errors.ToolFailed: when it does not exist or the backend is unavailable.
        """
        a = GetTicketArgs.model_validate(args)
        try:
            found = await ctx.tickets.get(a.ticket_id)
        except BackendUnavailable as exc:
            raise ToolFailed(self.name, exc) from exc
        ticket = authorize(found, a.ticket_id, ctx, self.name)
        content = ticket_view(ticket)
        content["comments"] = [
            {"author": author, "text": text, "created_at": at.isoformat()}
            for author, text, at in ticket.comments[-MAX_COMMENTS:]
        ]
        return ToolResult(content=content)


class AddTicketCommentArgs(BaseModel):
    """Arguments of ``add_ticket_comment``."""

    ticket_id: str = Field(min_length=1, max_length=100, description="The ticket id.")
    text: str = Field(min_length=1, max_length=8000, description="The comment to add.")


class AddTicketComment:
    """Add the customer's comment to one of their tickets. Content: the ticket."""

    name: ClassVar[str] = "add_ticket_comment"
    description: ClassVar[str] = (
        "Add a comment (new information from the customer) to one of the current customer's "
        "tickets."
    )
    args_model: ClassVar[type[BaseModel]] = AddTicketCommentArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Add the comment, authored by the customer.

        Raises:
            bot.errors.Forbidden: when the customer may not see the ticket.
            bot.errors.ToolFailed: when it does not exist or the backend is unavailable.
        """
        a = AddTicketCommentArgs.model_validate(args)
        try:
            authorize(await ctx.tickets.get(a.ticket_id), a.ticket_id, ctx, self.name)
            ticket = await ctx.tickets.comment(
                a.ticket_id, ctx.customer.name or ctx.customer.id, a.text
            )
        except (BackendUnavailable, NotFound) as exc:
            raise ToolFailed(self.name, exc) from exc
        return ToolResult(content=ticket_view(ticket))
