"""Handoff on the real SQL store: escalation, claim (CAS, capacity), reply, note, resolve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.desk import csat
from bot.envelope import TALK_TO_HUMAN, InboundMessage, OutboundKind, Participant
from bot.errors import Conflict, Forbidden, NotFound, PayloadInvalid
from bot.events import HubEvent, Subscription
from bot.handoff import REQUEST_ACTION
from bot.human_request import wants_human
from bot.store.base import AgentAccount, Role, SessionMode
from tests.console.desk import Desk, open_desk

ALICE = AgentAccount(name="alice", display_name="Alice", password_hash="x")
BOB = AgentAccount(name="bob", display_name="Bob", password_hash="x")


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    async with open_desk(tmp_path, agent_capacity=2) as d:
        yield d


async def _drain(sub: Subscription) -> list[HubEvent]:
    """Every event published so far (waits 50 ms for stragglers)."""
    events: list[HubEvent] = []
    while True:
        ev = await sub.get(0.05)
        if ev is None:
            return events
        events.append(ev)


class TestEscalate:
    async def test_opens_ticket_with_transcript_queues_and_tells_customer(
        self, desk: Desk
    ) -> None:
        key = await desk.customer_says("My order #4411 never arrived")
        await desk.customer_says("I want to talk to a person")
        async with desk.events.subscribe(key) as sub:
            conv = await desk.handoff.escalate(key, "customer_request", summary="Lost parcel")
            events = await _drain(sub)

        assert conv.mode == SessionMode.QUEUED
        assert conv.escalation_reason == "customer_request"
        assert conv.queued_at is not None
        assert conv.ticket_id is not None
        ticket = await desk.tickets.get(conv.ticket_id)
        assert ticket is not None
        assert "My order #4411 never arrived" in ticket.description
        assert "Lost parcel" in ticket.description
        assert ticket.requester_id == "user-c1"
        assert ticket.session_key == key
        [notice] = desk.sent_to(key)
        assert notice.kind == OutboundKind.HANDOFF
        assert conv.ticket_id in notice.text
        modes = [e for e in events if e.type == "mode"]
        assert [e.data["mode"] for e in modes] == ["queued"]
        stored = await desk.store.conversation(key)
        assert stored is not None
        assert stored.mode == SessionMode.QUEUED

    async def test_is_idempotent(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        first = await desk.handoff.escalate(key, "customer_request")
        again = await desk.handoff.escalate(key, "no_answer")
        both = await asyncio.gather(
            desk.handoff.escalate(key, "turn_failed"), desk.handoff.escalate(key, "agent_tool")
        )
        assert again.ticket_id == first.ticket_id
        assert {c.ticket_id for c in both} == {first.ticket_id}
        assert again.escalation_reason == "customer_request"
        assert len(desk.sent_to(key)) == 1
        assert len(await desk.tickets.list_for("user-c1", "rest")) == 1

    async def test_concurrent_first_escalations_open_one_ticket(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await asyncio.gather(*(desk.handoff.escalate(key, "no_answer") for _ in range(5)))
        assert len(await desk.tickets.list_for("user-c1", "rest")) == 1
        assert len(desk.sent_to(key)) == 1

    async def test_unknown_session(self, desk: Desk) -> None:
        from bot.envelope import session_key

        with pytest.raises(NotFound):
            await desk.handoff.escalate(session_key("rest", "default", chat="nope"), "x")

    async def test_second_escalation_after_resolve_reopens_the_same_ticket(
        self, desk: Desk
    ) -> None:
        key = await desk.customer_says("help")
        first = await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.resolve(key, ALICE)
        assert first.ticket_id is not None
        solved = await desk.tickets.get(first.ticket_id)
        assert solved is not None
        assert solved.status == "solved"
        await desk.customer_says("still broken, human please")
        second = await desk.handoff.escalate(key, "customer_request")
        assert second.mode == SessionMode.QUEUED
        assert second.ticket_id == first.ticket_id
        reopened = await desk.tickets.get(first.ticket_id)
        assert reopened is not None
        assert reopened.status == "open"
        assert any("still broken" in text for _, text, _ in reopened.comments)


class TestClaim:
    async def test_claim_makes_agent_owner_and_tells_customer(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        async with desk.events.subscribe(key) as sub:
            conv = await desk.handoff.claim(key, ALICE)
            events = await _drain(sub)
        assert conv.mode == SessionMode.HUMAN
        assert conv.assigned_agent == "alice"
        assert conv.queued_at is not None  # kept: how long the customer waited
        assert desk.sent_to(key)[-1].text.startswith("Alice")
        assert [(e.data["mode"], e.data["agent"]) for e in events if e.type == "mode"] == [
            ("human", "alice")
        ]
        # claiming one's own conversation again is a no-op
        assert (await desk.handoff.claim(key, ALICE)).assigned_agent == "alice"
        assert len(desk.sent_to(key)) == 2

    async def test_other_agent_gets_conflict(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(key, ALICE)
        with pytest.raises(Conflict, match="alice"):
            await desk.handoff.claim(key, BOB)

    async def test_concurrent_claims_have_one_winner(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        results = await asyncio.gather(
            desk.handoff.claim(key, ALICE), desk.handoff.claim(key, BOB), return_exceptions=True
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1
        assert len(losers) == 1
        assert isinstance(losers[0], Conflict)
        conv = await desk.store.conversation(key)
        assert conv is not None
        assert conv.assigned_agent == winners[0].assigned_agent
        joined = [o for o in desk.sent_to(key) if "joined" in o.text]
        assert len(joined) == 1

    async def test_capacity(self, desk: Desk) -> None:
        keys = [await desk.customer_says("help", chat=f"c{i}") for i in range(3)]
        for key in keys:
            await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(keys[0], ALICE)
        await desk.handoff.claim(keys[1], ALICE)
        with pytest.raises(Conflict, match="capacity 2"):
            await desk.handoff.claim(keys[2], ALICE)
        await desk.handoff.claim(keys[2], BOB)  # Bob still has room
        await desk.handoff.resolve(keys[0], ALICE)
        assert len(await desk.handoff.owned_by("alice")) == 1

    async def test_take_over_from_bot(self, desk: Desk) -> None:
        key = await desk.customer_says("hello bot")
        conv = await desk.handoff.claim(key, ALICE)
        assert conv.mode == SessionMode.HUMAN
        assert conv.assigned_agent == "alice"

    async def test_closed_cannot_be_claimed(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.resolve(key, ALICE, close=True)
        with pytest.raises(Conflict):
            await desk.handoff.claim(key, ALICE)


class TestReplyAndNote:
    async def test_owner_reply_is_delivered_as_agent_and_commented(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        conv = await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(key, ALICE)
        stored = await desk.handoff.reply(key, ALICE, "  Hi, I'm looking into it.  ")
        out = desk.sent_to(key)[-1]
        assert out.kind == OutboundKind.AGENT
        assert out.author == "Alice"
        assert out.text == "Hi, I'm looking into it."
        assert stored.role == Role.AGENT
        assert stored.kind == "agent"
        assert conv.ticket_id is not None
        ticket = await desk.tickets.get(conv.ticket_id)
        assert ticket is not None
        assert ("Alice", "Hi, I'm looking into it.") in [(a, t) for a, t, _ in ticket.comments]

    async def test_customer_messages_reach_the_ticket_once_even_when_a_turn_runs_again(
        self, desk: Desk
    ) -> None:
        key = await desk.customer_says("My parcel is lost")
        await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(key, ALICE)
        inbound = [
            InboundMessage(
                event_id=event_id,
                channel="rest",
                account="default",
                session_key=key,
                sender=Participant(id="user-c1", name="Dana Customer"),
                text=text,
            )
            for event_id, text in (
                ("e-2", "It was order 4411"),
                ("e-3", "Tracking says delivered"),
            )
        ]
        for m in inbound:
            await desk.store.append_inbound(m)

        conv = await desk.store.conversation(key)
        assert conv is not None
        await desk.handoff.copy_to_ticket(conv, inbound)
        conv = await desk.store.conversation(key)  # a worker crashed after: the turn re-runs
        assert conv is not None
        await desk.handoff.copy_to_ticket(conv, inbound)

        assert conv.ticket_id is not None
        ticket = await desk.tickets.get(conv.ticket_id)
        assert ticket is not None
        texts = [t for _, t, _ in ticket.comments]
        assert texts.count("It was order 4411") == 1
        assert texts.count("Tracking says delivered") == 1

    async def test_only_the_owner_may_reply(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        with pytest.raises(Conflict):
            await desk.handoff.reply(key, ALICE, "hello")  # not claimed yet
        await desk.handoff.claim(key, ALICE)
        with pytest.raises(Forbidden):
            await desk.handoff.reply(key, BOB, "hello")
        with pytest.raises(PayloadInvalid):
            await desk.handoff.reply(key, ALICE, "   ")
        assert all(o.kind != OutboundKind.AGENT for o in desk.sent_to(key))

    async def test_note_is_internal_and_never_delivered(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        sent_before = len(desk.sent)
        async with desk.events.subscribe(key) as sub:
            note = await desk.handoff.note(key, BOB, "VIP customer, be nice")
            events = await _drain(sub)
        assert len(desk.sent) == sent_before
        assert note.internal
        assert note.kind == "note"
        assert note.author == "Bob"
        public = await desk.store.messages(key)
        assert all(m.text != "VIP customer, be nice" for m in public)
        everything = await desk.store.messages(key, include_internal=True)
        assert everything[-1].text == "VIP customer, be nice"
        assert [(e.type, e.seq, e.data["kind"]) for e in events] == [("message", note.seq, "note")]


class TestResolve:
    async def test_resolve_hands_back_to_bot(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        await desk.handoff.claim(key, ALICE)
        with pytest.raises(Forbidden):
            await desk.handoff.resolve(key, BOB)
        async with desk.events.subscribe(key) as sub:
            conv = await desk.handoff.resolve(key, ALICE)
            events = await _drain(sub)
        assert conv.mode == SessionMode.BOT
        assert conv.assigned_agent is None
        assert conv.queued_at is None
        assert [e.data["mode"] for e in events if e.type == "mode"] == ["bot"]
        assert desk.sent_to(key)[-1].kind == OutboundKind.NOTICE
        assert await desk.handoff.queue() == []
        # resolving again changes nothing and tells nobody
        n = len(desk.sent)
        assert (await desk.handoff.resolve(key, ALICE)).mode == SessionMode.BOT
        assert len(desk.sent) == n

    async def test_close(self, desk: Desk) -> None:
        key = await desk.customer_says("help")
        await desk.handoff.escalate(key, "customer_request")
        conv = await desk.handoff.resolve(key, ALICE, close=True)
        assert conv.mode == SessionMode.CLOSED
        closing, survey = desk.sent_to(key)[-2:]
        assert "closed" in closing.text
        assert survey.text == csat.PROMPT  # then the CSAT survey (tests/desk/test_csat.py)


async def test_queue_order(desk: Desk) -> None:
    first = await desk.customer_says("a", chat="first")
    second = await desk.customer_says("b", chat="second")
    third = await desk.customer_says("c", chat="third")
    await desk.handoff.escalate(first, "customer_request")
    await asyncio.sleep(0.01)
    await desk.handoff.escalate(second, "no_answer")
    await asyncio.sleep(0.01)
    await desk.handoff.escalate(third, "no_answer")
    await desk.handoff.claim(first, ALICE)
    queue = await desk.handoff.queue()
    assert [(c.session_key, c.mode) for c in queue] == [
        (second, SessionMode.QUEUED),
        (third, SessionMode.QUEUED),
        (first, SessionMode.HUMAN),
    ]


def test_request_action_is_the_talk_to_human_button() -> None:
    assert REQUEST_ACTION == TALK_TO_HUMAN.id == "handoff.request"


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a person",
        "talk to a human please",
        "Can I speak to someone?",
        "I need a real person",
        "REPRESENTATIVE",
        "operator!",
        "agent",
        "human pls",
        "connect me to an agent",
        "let me speak with a live agent",
        "This bot is useless, get me a human",
        "Is there a real person I can talk to?",
        "Ich möchte mit einem Menschen sprechen",
        "Je veux parler à un humain",
        "Quiero hablar con una persona",
        "Posso falar com um atendente?",
        "vorrei parlare con un operatore",
        "Ik wil met een medewerker spreken",
    ],
)
def test_wants_human(text: str) -> None:
    assert wants_human(text)


@pytest.mark.parametrize(
    "text",
    [
        "how do I add a human agent in the console?",
        "How do I connect Slack?",
        "Can customers talk to an agent from the web chat?",
        "how do users speak to a human in Teams?",
        "How do I create an operator account?",
        "I need someone to explain webhooks",
        "I need an agent that answers in Slack",
        "What is the human queue?",
        "the agent answered wrong",
        "Quiero hablar con el banco",
        "",
    ],
)
def test_does_not_want_human(text: str) -> None:
    assert not wants_human(text)
