"""The built-in agent tools, called directly with a ToolContext (no model)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bot.envelope import Participant, SessionKey
from bot.errors import Forbidden, ToolFailed
from bot.tools import Tool, ToolContext
from plugins.escalation.registry import builtin_tools
from plugins.escalation.tools import EscalateArgs, EscalateToHuman
from plugins.knowledge.tools import SearchKnowledge, SearchKnowledgeArgs
from plugins.ticketing.tools import (
    AddTicketComment,
    AddTicketCommentArgs,
    CreateTicket,
    CreateTicketArgs,
    GetTicket,
    GetTicketArgs,
)
from tests.fakes.retriever import FixedRetriever, passage
from tests.fakes.tickets import MemoryTickets

ROOT = Path(__file__).resolve().parents[2]
ALICE = Participant(id="U-alice", name="Alice", verified=True)
SESSION = SessionKey("rest:default:dm:U-alice")


class Escalations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, reason: str, summary: str) -> None:
        self.calls.append((reason, summary))


def make_ctx(
    *,
    customer: Participant = ALICE,
    session_key: SessionKey = SESSION,
    channel: str = "rest",
    tickets: MemoryTickets | None = None,
    retriever: FixedRetriever | None = None,
    escalate: Escalations | None = None,
) -> ToolContext:
    return ToolContext(
        session_key=session_key,
        channel=channel,
        customer=customer,
        retriever=retriever or FixedRetriever(),
        tickets=tickets or MemoryTickets(),
        escalate=escalate or Escalations(),
        max_citations=2,
    )


class TestSearchKnowledge:
    async def test_returns_passages_and_one_citation_per_document(self) -> None:
        retriever = FixedRetriever(
            [
                passage(
                    "slack", "Create a Slack app.", heading="Setup > Slack", url="https://d/s"
                ),
                passage("slack", "Add the signing secret.", score=0.9),
                passage("email", "Point IMAP at the mailbox.", score=0.5),
                passage("teams", "Register a bot.", score=0.4),
            ]
        )
        ctx = make_ctx(retriever=retriever)
        result = await SearchKnowledge()(SearchKnowledgeArgs(query="slack", top_k=4), ctx)
        content: dict[str, Any] = result.content
        assert [p["doc_id"] for p in content["passages"]] == ["slack", "slack", "email", "teams"]
        first = content["passages"][0]
        assert first == {
            "doc_id": "slack",
            "title": "Slack",
            "url": "https://d/s",
            "heading": "Setup > Slack",
            "text": "Create a Slack app.",
        }
        assert [c.doc_id for c in result.citations] == ["slack", "email"]  # max_citations=2
        assert retriever.queries == ["slack"]

    async def test_index_down_is_a_tool_failure(self) -> None:
        ctx = make_ctx(retriever=FixedRetriever(fail=True))
        with pytest.raises(ToolFailed) as err:
            await SearchKnowledge()(SearchKnowledgeArgs(query="slack"), ctx)
        assert err.value.tool == "search_knowledge"


class TestTickets:
    async def test_create_uses_the_context_customer_not_the_model_arguments(self) -> None:
        tickets = MemoryTickets()
        ctx = make_ctx(tickets=tickets)
        args = CreateTicketArgs.model_validate_json(
            '{"subject": "Refund", "description": "Charged twice", "priority": "high",'
            ' "requester_id": "U-mallory", "requester": {"id": "U-mallory"}}'
        )
        result = await CreateTicket()(args, ctx)
        (ticket,) = tickets.tickets.values()
        assert ticket.requester_id == "U-alice"
        assert ticket.requester_channel == "rest"
        assert ticket.session_key == SESSION
        assert ticket.priority == "high"
        assert result.content["id"] == ticket.id
        assert result.content["status"] == "open"

    async def test_get_own_ticket_with_comments(self) -> None:
        tickets = MemoryTickets()
        ticket = await tickets.create(
            subject="VPN", description="d", requester=ALICE, channel="rest", session_key=None
        )
        await tickets.comment(ticket.id, "Sam (support)", "Try reconnecting.")
        result = await GetTicket()(GetTicketArgs(ticket_id=ticket.id), make_ctx(tickets=tickets))
        assert result.content["subject"] == "VPN"
        assert [c["text"] for c in result.content["comments"]] == ["Try reconnecting."]

    @pytest.mark.parametrize(
        ("requester", "channel"),
        [("U-bob", "rest"), ("U-alice", "slack")],
        ids=["other-customer", "same-id-other-channel"],
    )
    async def test_get_refuses_someone_elses_ticket(self, requester: str, channel: str) -> None:
        tickets = MemoryTickets()
        other = await tickets.create(
            subject="Bob's secret",
            description="d",
            requester=Participant(id=requester),
            channel=channel,
            session_key=None,
        )
        with pytest.raises(Forbidden):
            await GetTicket()(GetTicketArgs(ticket_id=other.id), make_ctx(tickets=tickets))

    async def test_unknown_ticket_is_a_tool_failure(self) -> None:
        with pytest.raises(ToolFailed, match="T-999"):
            await GetTicket()(GetTicketArgs(ticket_id="T-999"), make_ctx())

    async def test_unverified_customer_reads_only_tickets_of_this_session(self) -> None:
        tickets = MemoryTickets()
        claimed = Participant(id="U-alice", verified=False)  # self-asserted id
        old = await tickets.create(
            subject="old", description="d", requester=ALICE, channel="rest", session_key=None
        )
        ctx = make_ctx(customer=claimed, tickets=tickets)
        with pytest.raises(Forbidden, match="not verified"):
            await GetTicket()(GetTicketArgs(ticket_id=old.id), ctx)
        created = await CreateTicket()(
            CreateTicketArgs(subject="new", description="d"), ctx
        )  # creating is allowed
        result = await GetTicket()(GetTicketArgs(ticket_id=created.content["id"]), ctx)
        assert result.content["subject"] == "new"
        # The verified customer reads both.
        verified = make_ctx(tickets=tickets, session_key=SessionKey("rest:default:dm:other"))
        assert (await GetTicket()(GetTicketArgs(ticket_id=old.id), verified)).content["id"]

    async def test_comment_on_own_ticket(self) -> None:
        tickets = MemoryTickets()
        ticket = await tickets.create(
            subject="VPN", description="d", requester=ALICE, channel="rest", session_key=None
        )
        await AddTicketComment()(
            AddTicketCommentArgs(ticket_id=ticket.id, text="Still broken"),
            make_ctx(tickets=tickets),
        )
        assert [(a, t) for a, t, _ in tickets.tickets[ticket.id].comments] == [
            ("Alice", "Still broken")
        ]

    async def test_comment_refused_on_someone_elses_ticket_and_nothing_written(self) -> None:
        tickets = MemoryTickets()
        other = await tickets.create(
            subject="x",
            description="d",
            requester=Participant(id="U-bob"),
            channel="rest",
            session_key=None,
        )
        with pytest.raises(Forbidden):
            await AddTicketComment()(
                AddTicketCommentArgs(ticket_id=other.id, text="hijack"), make_ctx(tickets=tickets)
            )
        assert tickets.tickets[other.id].comments == ()


class TestEscalate:
    async def test_escalates_once_per_turn(self) -> None:
        escalations = Escalations()
        ctx = make_ctx(escalate=escalations)
        args = EscalateArgs(reason="customer asked for a person", summary="Refund for order 42")
        result = await EscalateToHuman()(args, ctx)
        await EscalateToHuman()(args, ctx)
        assert ctx.escalated
        assert result.content["escalated"] is True
        assert len(escalations.calls) == 1
        reason, summary = escalations.calls[0]
        assert reason == "agent_tool"
        assert "customer asked for a person" in summary
        assert "Refund for order 42" in summary


class TestRegistry:
    def test_builtin_tools_match_the_declared_entry_points(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        declared = project["project"]["entry-points"]["switchboard.tools"]
        tools = builtin_tools()
        assert {t.name for t in tools} == set(declared)
        for tool in tools:
            module, _, cls = declared[tool.name].partition(":")
            assert (type(tool).__module__, type(tool).__name__) == (module, cls)

    @pytest.mark.parametrize("tool", builtin_tools(), ids=lambda t: t.name)
    def test_tool_shape(self, tool: Tool) -> None:
        assert tool.description
        assert issubclass(tool.args_model, BaseModel)
        schema = tool.args_model.model_json_schema()
        assert schema["type"] == "object"
        assert "requester_id" not in schema.get("properties", {})
