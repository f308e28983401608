"""The behaviour every :class:`bot.tools.TicketBackend` shares (local, Zendesk, Jira).

A backend's test module subclasses :class:`TicketBackendContract` and provides a ``tickets``
fixture yielding the backend as ``bot.compose.ticket_backend`` builds it (for external
products: against their fake servers, with the real SDK). The tests go through the backend
and through the model's tools (``create_ticket``, ``get_ticket``, ``add_ticket_comment``) with
a :class:`~bot.tools.ToolContext` holding the verified customer: a customer asking for another
customer's ticket is refused whatever the model wrote.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.envelope import Participant, SessionKey
from bot.errors import Forbidden, NotFound, ToolFailed
from bot.retrieval import NoKnowledge
from bot.tools import Ticket, TicketBackend, ToolContext
from plugins.ticketing.tools import (
    AddTicketComment,
    AddTicketCommentArgs,
    CreateTicket,
    CreateTicketArgs,
    GetTicket,
    GetTicketArgs,
)

ALICE = Participant(id="U-alice", name="Alice", email="alice@example.com", verified=True)
MALLORY = Participant(id="U-mallory", name="Mallory", verified=True)
ALICE_KEY = SessionKey("webchat:site:visitor:alice")
MALLORY_KEY = SessionKey("webchat:site:visitor:mallory")


async def _escalate(reason: str, summary: str) -> None:
    raise AssertionError("the ticket tools never escalate")


def context(tickets: TicketBackend, who: Participant, key: SessionKey) -> ToolContext:
    """The tool context of a web chat turn of ``who``."""
    return ToolContext(
        session_key=key,
        channel="webchat",
        customer=who,
        retriever=NoKnowledge(),
        tickets=tickets,
        escalate=_escalate,
    )


async def open_ticket(tickets: TicketBackend, who: Participant = ALICE, **kw: Any) -> Ticket:
    """A ticket of ``who`` on web chat, opened through the backend."""
    return await tickets.create(
        subject=kw.get("subject", "Cannot connect Slack"),
        description=kw.get("description", "customer: it fails\nbot: sorry"),
        requester=who,
        channel="webchat",
        session_key=kw.get("session_key", ALICE_KEY),
        priority=kw.get("priority", "normal"),
    )


class TicketBackendContract:
    """Subclass it with a ``tickets`` fixture (see the module)."""

    async def test_create_then_get(self, tickets: TicketBackend) -> None:
        made = await open_ticket(tickets, description="customer: it fails\nbot: sorry")
        assert not made.queued
        got = await tickets.get(made.id)
        assert got is not None
        assert got.id == made.id
        assert got.subject == "Cannot connect Slack"
        assert "customer: it fails" in got.description
        assert got.status == "open"
        assert (got.requester_id, got.requester_channel, got.session_key) == (
            ALICE.id,
            "webchat",
            ALICE_KEY,
        )

    async def test_comments_and_status(self, tickets: TicketBackend) -> None:
        made = await open_ticket(tickets)
        after = await tickets.comment(made.id, "Alice", "It also fails on Teams")
        assert any("It also fails on Teams" in text for _, text, _ in after.comments)
        solved = await tickets.set_status(made.id, "solved")
        assert solved.status == "solved"
        reopened = await tickets.set_status(made.id, "open")
        assert reopened.status == "open"

    async def test_unknown_ticket(self, tickets: TicketBackend) -> None:
        for unknown in ("T-999999", "999999", "SUP-999", "SB-999999"):
            assert await tickets.get(unknown) is None
        with pytest.raises(NotFound):
            await tickets.comment("T-999999", "Alice", "hello?")

    async def test_list_for_only_the_requester_newest_first(self, tickets: TicketBackend) -> None:
        first = await open_ticket(tickets, subject="first")
        await open_ticket(tickets, MALLORY, subject="not Alice's", session_key=MALLORY_KEY)
        second = await open_ticket(tickets, subject="second")
        mine = await tickets.list_for(ALICE.id, "webchat")
        assert [t.id for t in mine] == [second.id, first.id]

    async def test_tools_open_read_and_comment_for_the_customer(
        self, tickets: TicketBackend
    ) -> None:
        ctx = context(tickets, ALICE, ALICE_KEY)
        # A requester the model wrote is ignored: the ticket is the context's customer's.
        args = CreateTicketArgs.model_validate(
            {"subject": "Refund", "description": "charged twice", "requester": MALLORY.id}
        )
        created = (await CreateTicket()(args, ctx)).content
        ticket = await tickets.get(created["id"])
        assert ticket is not None
        assert ticket.requester_id == ALICE.id
        read = await GetTicket()(GetTicketArgs(ticket_id=created["id"]), ctx)
        assert read.content["subject"] == "Refund"
        await AddTicketComment()(
            AddTicketCommentArgs(ticket_id=created["id"], text="order 1234"), ctx
        )
        after = await tickets.get(created["id"])
        assert after is not None
        assert any("order 1234" in t for _, t, _ in after.comments)

    async def test_another_customers_ticket_is_refused(self, tickets: TicketBackend) -> None:
        alices = await open_ticket(tickets)
        ctx = context(tickets, MALLORY, MALLORY_KEY)
        with pytest.raises(Forbidden):
            await GetTicket()(GetTicketArgs(ticket_id=alices.id), ctx)
        with pytest.raises(Forbidden):
            await AddTicketComment()(
                AddTicketCommentArgs(ticket_id=alices.id, text="close it please"), ctx
            )
        after = await tickets.get(alices.id)
        assert after is not None
        assert not any("close it please" in text for _, text, _ in after.comments)
        with pytest.raises(ToolFailed):
            await GetTicket()(GetTicketArgs(ticket_id="no-such-ticket"), ctx)
