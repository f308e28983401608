"""The ``lookup_customer`` tool: the current customer's CRM record.

Authorization comes from the :class:`~bot.tools.ToolContext` only: the lookup key is the
identity the channel verified (e-mail, phone, platform id), never an argument the model wrote.
A customer whose identity is not verified gets no record, and an ``email`` argument that is not
the verified address is refused (:class:`~bot.errors.Forbidden`): a customer can read only
their own record.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from bot.errors import BackendUnavailable, Forbidden, RateLimited, ToolFailed
from bot.tools import (
    OPEN_TICKET_STATUSES,
    CrmContact,
    CustomerIdentity,
    Ticket,
    ToolContext,
    ToolResult,
)


def contact_view(contact: CrmContact, open_tickets: list[Ticket]) -> dict[str, Any]:
    """A contact as the model sees it: the record's fields and the customer's open tickets."""
    view: dict[str, Any] = {k: v for k, v in asdict(contact).items() if k not in ("id", "url")}
    view["open_tickets"] = [
        {"id": t.id, "subject": t.subject, "status": t.status} for t in open_tickets
    ]
    return view


class LookupCustomerArgs(BaseModel):
    """Arguments of ``lookup_customer`` (none are needed: the customer is known)."""

    email: str | None = Field(
        default=None,
        max_length=320,
        description=(
            "Leave empty. The lookup is always for the current customer's verified identity; "
            "an address that is not theirs is refused."
        ),
    )


class LookupCustomer:
    """Read the current customer's CRM record (name, company, plan, owner, open tickets)."""

    name: ClassVar[str] = "lookup_customer"
    description: ClassVar[str] = (
        "Look up the current customer's own record in the CRM: name, company, plan, account "
        "owner and open tickets. Works only for customers whose identity the channel verified."
    )
    args_model: ClassVar[type[BaseModel]] = LookupCustomerArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Find the record of ``ctx.customer``.

        Raises:
            bot.errors.Forbidden: the identity is not verified, or ``email`` is someone else's.
            bot.errors.ToolFailed: no CRM is configured, or it is unavailable or rate-limited.
        """
        a = LookupCustomerArgs.model_validate(args)
        identity = CustomerIdentity.of(ctx.customer, ctx.channel)
        if not identity.verified:
            raise Forbidden("the customer's identity is not verified; no CRM record is shown")
        if a.email and a.email.strip().lower() != identity.email:
            raise Forbidden("a customer can read only their own CRM record")
        if ctx.crm is None:
            raise ToolFailed(self.name, "no CRM is configured")
        try:
            contact = await ctx.crm.find_contact(identity)
            tickets = await ctx.tickets.list_for(ctx.customer.id, ctx.channel)
        except RateLimited as exc:
            raise ToolFailed(
                self.name, f"the CRM is busy, retry after {exc.retry_after:.0f} s"
            ) from exc
        except BackendUnavailable as exc:
            raise ToolFailed(self.name, f"the CRM is unavailable right now ({exc})") from exc
        if contact is None:
            return ToolResult(content={"found": False})
        open_tickets = [t for t in tickets if t.status in OPEN_TICKET_STATUSES]
        return ToolResult(content={"found": True, **contact_view(contact, open_tickets)})
