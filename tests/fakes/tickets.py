"""An in-memory :class:`bot.tools.TicketBackend` for tests (complete, not a mock)."""

from __future__ import annotations

import dataclasses
import itertools

from bot.envelope import Participant, SessionKey, utcnow
from bot.errors import NotFound
from bot.tools import Ticket


class MemoryTickets:
    """Tickets in a dict; ids ``T-000001``, ``T-000002``...

    Attributes:
        tickets: every ticket by id (tests may inspect or seed it).
    """

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self._ids = itertools.count(1)

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
        ticket = Ticket(
            id=f"T-{next(self._ids):06d}",
            subject=subject,
            description=description,
            status="open",
            priority=priority,
            requester_id=requester.id,
            requester_channel=channel,
            session_key=session_key,
            comments=(),
            created_at=utcnow(),
        )
        self.tickets[ticket.id] = ticket
        return ticket

    async def get(self, ticket_id: str) -> Ticket | None:
        return self.tickets.get(ticket_id)

    async def list_for(self, requester_id: str, channel: str, limit: int = 20) -> list[Ticket]:
        mine = [
            t
            for t in self.tickets.values()
            if t.requester_id == requester_id and t.requester_channel == channel
        ]
        return sorted(mine, key=lambda t: t.created_at, reverse=True)[:limit]

    async def comment(self, ticket_id: str, author: str, text: str) -> Ticket:
        ticket = self._existing(ticket_id)
        updated = dataclasses.replace(
            ticket, comments=(*ticket.comments, (author, text, utcnow()))
        )
        self.tickets[ticket_id] = updated
        return updated

    async def set_status(self, ticket_id: str, status: str) -> Ticket:
        updated = dataclasses.replace(self._existing(ticket_id), status=status)
        self.tickets[ticket_id] = updated
        return updated

    def _existing(self, ticket_id: str) -> Ticket:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise NotFound(f"no ticket {ticket_id!r}")
        return ticket
