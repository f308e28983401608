"""Human handoff: session modes, the human queue, and human agents' actions.

A session is in one mode: ``bot``, ``queued`` (waiting for a human), ``human`` (owned by one
agent) or ``closed``. Escalation opens a ticket with the transcript, queues the session and tells
the customer; while a human owns it the bot is silent; the agent's replies leave through the
customer's own channel; resolving hands the session back to the bot.

Every mode change is a compare-and-set on the store (:meth:`bot.store.base.Store.set_mode` with
``expect``), so two agents clicking "Claim" at once cannot both own a session, and is published
as ``HubEvent("mode", session_key, data={"mode", "agent", "reason", "ticket_id"})``. Every action
is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from bot.assignment import Assignment
from bot.auth import Permission, require
from bot.config import Settings
from bot.desk.csat import Survey
from bot.desk.store import DeskStore
from bot.envelope import (
    TALK_TO_HUMAN,
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    utcnow,
)
from bot.errors import Conflict, Forbidden, NotFound, PayloadInvalid, SwitchboardError
from bot.events import EventBus, HubEvent, mode_event
from bot.store.base import (
    AgentAccount,
    Conversation,
    NewMessage,
    Role,
    SessionMode,
    Store,
    StoredMessage,
)
from bot.store.routing_records import Priority
from bot.tools import TicketBackend

if TYPE_CHECKING:
    from bot.observability import Metrics

log = logging.getLogger(__name__)

DeliverFn = Callable[[OutboundMessage], Awaitable[StoredMessage]]
"""The hub's ``deliver``: stores an outbound message, publishes it, sends it on its channel."""

REQUEST_ACTION = TALK_TO_HUMAN.id
"""The action id of the "Talk to a person" button (``handoff.request``)."""

TRANSCRIPT_MAX_MESSAGES = 200
"""Messages copied into an escalation ticket's description (the most recent ones)."""

COPIED_META_KEY = "ticket_copied"
"""Conversation ``meta`` key of the event ids :meth:`Handoff.copy_to_ticket` copied."""

COPIED_KEPT = 50
"""How many copied event ids are kept (a re-run turn holds far fewer messages)."""

_ACTIVE_MODES = (SessionMode.QUEUED, SessionMode.HUMAN)


# --- the handoff service ------------------------------------------------------------------------


def _transcript(messages: Sequence[StoredMessage]) -> str:
    """The customer-visible transcript as plain text, one message per paragraph."""
    lines = []
    for m in messages:
        who = m.author or m.role.value
        stamp = m.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"[{stamp}] {who}: {m.text}")
    return "\n\n".join(lines) if lines else "(no messages)"


def queue_order(conversations: Sequence[Conversation]) -> list[Conversation]:
    """Sort for the console: queued ones first, longest waiting first; then human-owned ones.

    Args:
        conversations: conversations in any order (other modes are dropped).

    Returns:
        The queue as the console shows it.
    """
    far = datetime.max.replace(tzinfo=utcnow().tzinfo)
    queued = [c for c in conversations if c.mode == SessionMode.QUEUED]
    human = [c for c in conversations if c.mode == SessionMode.HUMAN]
    queued.sort(key=lambda c: c.queued_at or far)
    human.sort(key=lambda c: c.queued_at or c.updated_at)
    return queued + human


class Handoff:
    """The human queue and the actions of human agents.

    Args:
        settings: for ``agent_capacity`` (sessions one agent may own at once) and names.
        store: conversations, messages, audit log.
        events: where mode changes and notes are published.
        tickets: the ticket backend escalations open tickets in.
        deliver: the hub's deliver (store + publish + send on the customer's channel).
        metrics: when given, ``escalations`` is counted by reason.

    ``desk`` (:class:`bot.desk.store.DeskStore`) keeps ratings, canned replies and LLM usage
    in the same database; ``survey`` (:class:`bot.desk.csat.Survey`) asks for a rating after
    each resolution and takes the answer (the router calls it).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        events: EventBus,
        tickets: TicketBackend,
        deliver: DeliverFn,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.tickets = tickets
        self.deliver = deliver
        self.metrics = metrics
        self.assignment = Assignment(settings, store, events, self._announce)
        """Teams, presence, capacity, auto-assignment and SLA clocks (:mod:`bot.assignment`)."""
        self.desk = DeskStore(store)
        self.survey = Survey(settings, store, self.desk, deliver)
        # One lock per session while an escalation runs; entries vanish with their last user.
        self._locks: weakref.WeakValueDictionary[SessionKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @contextmanager
    def _hold(self, session_key: SessionKey) -> Iterator[asyncio.Lock]:
        lock = self._locks.get(session_key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_key] = lock
        yield lock

    async def _conversation(self, session_key: SessionKey) -> Conversation:
        conv = await self.store.conversation(session_key)
        if conv is None:
            raise NotFound(f"no conversation {session_key!r}")
        return conv

    def _publish(self, conv: Conversation) -> None:
        self.events.publish(mode_event(conv))

    async def _notify(self, session_key: SessionKey, text: str, kind: OutboundKind) -> None:
        """Tell the customer; a failure to store the notice must not undo the mode change."""
        try:
            await self.deliver(OutboundMessage(session_key=session_key, text=text, kind=kind))
        except SwitchboardError:
            log.warning("handoff.notice_failed", exc_info=True, extra={"session_key": session_key})

    # --- escalation -----------------------------------------------------------------------------

    async def escalate(
        self, session_key: SessionKey, reason: str, *, summary: str | None = None
    ) -> Conversation:
        """Put a session on the human queue, open a ticket, tell the customer.

        Idempotent: a session already ``queued`` or ``human`` is returned unchanged (no second
        ticket, no second notice). A session escalated before (ticket id on record) gets its
        ticket reopened with a comment instead of a new one.

        Args:
            session_key: the conversation.
            reason: why (``customer_request``, ``agent_tool``, ``no_answer``, ``turn_failed``).
            summary: the bot's one-paragraph summary for the agent, if it wrote one.

        Returns:
            The conversation as it is now (mode ``queued`` unless it already was with a human).

        Raises:
            NotFound: the session never wrote.
        """
        with self._hold(session_key) as lock:
            async with lock:
                conv = await self._conversation(session_key)
                if conv.mode in _ACTIVE_MODES:
                    return conv
                ticket_id, queued = await self._open_ticket(conv, reason, summary)
                try:
                    conv = await self.store.set_mode(
                        session_key,
                        SessionMode.QUEUED,
                        expect=[SessionMode.BOT, SessionMode.CLOSED],
                        reason=reason,
                        ticket_id=ticket_id,
                    )
                except Conflict:
                    # Another process escalated it between our read and our write.
                    return await self._conversation(session_key)
        if self.metrics is not None:
            self.metrics.escalations.labels(reason).inc()
        log.info(
            "handoff.escalated",
            extra={
                "session_key": session_key,
                "channel": conv.channel,
                "reason": reason,
                "ticket_id": ticket_id,
            },
        )
        self._publish(conv)
        await self.store.audit(
            "bot", "escalate", session_key, {"reason": reason, "ticket_id": ticket_id}
        )
        ref = f" Your reference is {ticket_id}." if ticket_id else ""
        if queued:
            ref = (
                f" Our ticket system is not reachable right now: your request is saved as"
                f" {ticket_id} and the ticket will be opened as soon as it is back."
            )
        await self._notify(
            session_key,
            "I'm handing this conversation to a person from our team; they will reply here"
            f" as soon as they can.{ref}",
            OutboundKind.HANDOFF,
        )
        priority = Priority.HIGH if reason == "turn_failed" else Priority.NORMAL
        try:
            return await self.assignment.route(conv, priority)
        except SwitchboardError:  # it is queued: the sweeper hands it out later
            log.warning("handoff.route_failed", exc_info=True, extra={"session_key": session_key})
            return conv

    async def _open_ticket(
        self, conv: Conversation, reason: str, summary: str | None
    ) -> tuple[str | None, bool]:
        """Create the escalation ticket (or reopen the session's last one).

        Returns:
            The ticket id (None on failure) and whether the ticket is only queued (its
            external system was down: :attr:`bot.tools.Ticket.queued`).
        """
        history = await self.store.messages(conv.session_key, limit=TRANSCRIPT_MAX_MESSAGES)
        transcript = _transcript(history[-TRANSCRIPT_MAX_MESSAGES:])
        head = f"Escalated from {conv.channel} ({reason})."
        if summary:
            head += f"\n\nSummary: {summary}"
        description = f"{head}\n\nTranscript:\n\n{transcript}"
        try:
            if conv.ticket_id is not None and await self.tickets.get(conv.ticket_id) is not None:
                await self.tickets.comment(conv.ticket_id, "switchboard", description)
                await self.tickets.set_status(conv.ticket_id, "open")
                return conv.ticket_id, False
            first = next((m.text for m in history if m.role == Role.CUSTOMER), "")
            who = conv.customer.name or conv.customer.id
            subject = f"{who} via {conv.channel}: {first[:80] or reason}".strip()
            ticket = await self.tickets.create(
                subject=subject,
                description=description,
                requester=conv.customer,
                channel=conv.channel,
                session_key=conv.session_key,
                priority="high" if reason == "turn_failed" else "normal",
            )
        except SwitchboardError:
            # The customer still reaches a human; the agent sees the transcript in the console.
            log.warning(
                "handoff.ticket_failed", exc_info=True, extra={"session_key": conv.session_key}
            )
            return None, False
        return ticket.id, ticket.queued

    # --- agents' actions ------------------------------------------------------------------------

    async def claim(self, session_key: SessionKey, agent: AgentAccount) -> Conversation:
        """Make ``agent`` the owner of a session.

        ``queued`` → ``human``, or take over from the bot: ``bot`` → ``human``. Claiming one's
        own session again changes nothing. The customer is told who joined.

        Raises:
            NotFound: the session never wrote.
            Conflict: another agent owns it, it is closed, it changed meanwhile, or the agent
                already owns ``settings.agent_capacity`` sessions.
            bot.auth.RoleForbidden: the agent's role may not act (a viewer).
        """
        require(agent, Permission.ACT)
        conv = await self._conversation(session_key)
        if conv.mode == SessionMode.HUMAN:
            if conv.assigned_agent == agent.name:
                return conv
            raise Conflict(f"{conv.assigned_agent} already owns this conversation")
        if conv.mode == SessionMode.CLOSED:
            raise Conflict("the conversation is closed")
        # Capacity checked and mode compare-and-set in one transaction (bot.store.assignment).
        conv = await self.assignment.claim(session_key, agent.name, conv.mode)
        log.info("handoff.claimed", extra={"session_key": session_key, "agent": agent.name})
        self._publish(conv)
        await self.store.audit(agent.name, "claim", session_key, {"from": "queue"})
        await self._notify(
            session_key,
            f"{agent.display_name} from our team joined the conversation.",
            OutboundKind.NOTICE,
        )
        return conv

    async def owned_by(self, agent_name: str) -> list[Conversation]:
        """Sessions the agent owns now (mode ``human``)."""
        human = await self.store.conversations(modes=[SessionMode.HUMAN], limit=10_000)
        return [c for c in human if c.assigned_agent == agent_name]

    async def _owned(self, session_key: SessionKey, agent: AgentAccount) -> Conversation:
        require(agent, Permission.ACT)
        conv = await self._conversation(session_key)
        if conv.mode != SessionMode.HUMAN:
            raise Conflict("claim the conversation before replying")
        if conv.assigned_agent != agent.name:
            raise Forbidden(f"{conv.assigned_agent} owns this conversation")
        return conv

    async def reply(
        self, session_key: SessionKey, agent: AgentAccount, text: str
    ) -> StoredMessage:
        """Send the owning agent's reply to the customer through the customer's channel.

        The reply is stored as kind ``agent`` with the agent's display name as author and is
        copied to the ticket as a comment.

        Raises:
            PayloadInvalid: the text is empty.
            NotFound: the session never wrote.
            Conflict: nobody owns the session (claim it first).
            Forbidden: another agent owns it, or the agent's role may not act (a viewer).
        """
        text = text.strip()
        if not text:
            raise PayloadInvalid("the reply is empty", field="text")
        conv = await self._owned(session_key, agent)
        stored = await self.deliver(
            OutboundMessage(
                session_key=session_key,
                text=text,
                kind=OutboundKind.AGENT,
                author=agent.display_name,
            )
        )
        await self.store.audit(agent.name, "reply", session_key, {"seq": stored.seq})
        await self.assignment.sla.responded(session_key)
        if conv.ticket_id is not None:
            try:
                await self.tickets.comment(conv.ticket_id, agent.display_name, text)
            except SwitchboardError:
                log.warning(
                    "handoff.ticket_comment_failed",
                    exc_info=True,
                    extra={"session_key": session_key, "ticket_id": conv.ticket_id},
                )
        return stored

    async def copy_to_ticket(self, conv: Conversation, messages: Sequence[InboundMessage]) -> None:
        """Add what the customer wrote while a human owns the session to its ticket.

        The human may answer from the ticket (Zendesk, Jira): the thread there stays whole.
        Each message is copied once: the event ids copied are kept on the conversation
        (``meta["ticket_copied"]``, the last :data:`COPIED_KEPT`), so a turn re-run after a
        crash skips what reached the ticket (a crash between a comment and its mark can still
        copy that one message twice: at least once, never lost). A failure is logged; the
        messages are in the console anyway.
        """
        if conv.ticket_id is None:
            return
        copied: list[str] = list(conv.meta.get(COPIED_META_KEY) or [])
        for m in messages:
            if not m.text.strip() or m.event_id in copied:
                continue
            try:
                await self.tickets.comment(conv.ticket_id, m.sender.name or m.sender.id, m.text)
            except SwitchboardError:
                log.warning(
                    "handoff.ticket_comment_failed",
                    exc_info=True,
                    extra={"session_key": conv.session_key, "ticket_id": conv.ticket_id},
                )
                return
            copied = [*copied, m.event_id][-COPIED_KEPT:]
            await self.store.set_meta(conv.session_key, COPIED_META_KEY, copied)

    async def note(self, session_key: SessionKey, agent: AgentAccount, text: str) -> StoredMessage:
        """Add an internal note (seen by agents in the console, never by the customer).

        Any agent may add a note in any mode. The note is published as a ``message`` event
        (it does not pass through ``deliver``).

        Raises:
            PayloadInvalid: the text is empty.
            NotFound: the session never wrote.
            bot.auth.RoleForbidden: the agent's role may not act (a viewer).
        """
        require(agent, Permission.ACT)
        text = text.strip()
        if not text:
            raise PayloadInvalid("the note is empty", field="text")
        await self._conversation(session_key)
        [stored] = await self.store.append(
            [
                NewMessage(
                    session_key=session_key,
                    role=Role.AGENT,
                    text=text,
                    kind="note",
                    author=agent.display_name,
                    internal=True,
                )
            ]
        )
        self.events.publish(
            HubEvent(
                "message",
                session_key,
                stored.seq,
                data={"role": Role.AGENT.value, "kind": "note"},
            )
        )
        await self.store.audit(agent.name, "note", session_key, {"seq": stored.seq})
        return stored

    async def resolve(
        self, session_key: SessionKey, agent: AgentAccount, *, close: bool = False
    ) -> Conversation:
        """Hand the session back to the bot (or close it).

        Marks the ticket solved, tells the customer and asks for a CSAT rating
        (:class:`bot.desk.csat.Survey`). A session already in mode ``bot`` is returned unchanged.

        Args:
            session_key: the conversation.
            agent: who resolves; must own it when another agent does.
            close: end the conversation (mode ``closed``) instead of handing back to the bot.

        Raises:
            NotFound: the session never wrote.
            Forbidden: another agent owns it, or the agent's role may not act (a viewer).
            Conflict: it changed meanwhile.
        """
        require(agent, Permission.ACT)
        conv = await self._conversation(session_key)
        target = SessionMode.CLOSED if close else SessionMode.BOT
        if conv.mode == target or (conv.mode == SessionMode.CLOSED and not close):
            return conv
        if conv.mode == SessionMode.HUMAN and conv.assigned_agent != agent.name:
            raise Forbidden(f"{conv.assigned_agent} owns this conversation")
        previous = conv.mode
        conv = await self.store.set_mode(
            session_key,
            target,
            expect=[previous],
            agent=None,
            ticket_id=conv.ticket_id,
        )
        log.info(
            "handoff.resolved",
            extra={"session_key": session_key, "agent": agent.name, "mode": target.value},
        )
        self._publish(conv)
        await self.store.audit(
            agent.name, "close" if close else "resolve", session_key, {"from": previous.value}
        )
        await self.assignment.released(session_key)
        if conv.ticket_id is not None:
            try:
                await self.tickets.set_status(conv.ticket_id, "solved")
            except SwitchboardError:
                log.warning(
                    "handoff.ticket_status_failed",
                    exc_info=True,
                    extra={"session_key": session_key, "ticket_id": conv.ticket_id},
                )
        if close:
            text = f"{agent.display_name} closed this conversation. Thank you for contacting us."
        else:
            text = (
                f"{agent.display_name} has handed you back to our assistant."
                " Write any time if there is anything else."
            )
        await self._notify(session_key, text, OutboundKind.NOTICE)
        await self.survey.ask(conv, agent.name)
        return conv

    async def _announce(self, conv: Conversation, agent_name: str, how: str) -> None:
        """After an automatic assignment or a transfer: publish, audit, tell the customer."""
        self._publish(conv)
        await self.store.audit(
            "system", "assign", conv.session_key, {"agent": agent_name, "how": how}
        )
        account = await self.store.agent(agent_name)
        name = account.display_name if account is not None else agent_name
        await self._notify(
            conv.session_key, f"{name} from our team joined the conversation.", OutboundKind.NOTICE
        )

    async def queue(self) -> list[Conversation]:
        """The console's queue: ``queued`` sessions, longest waiting first, then ``human`` ones."""
        convs = await self.store.conversations(modes=list(_ACTIVE_MODES), limit=10_000)
        return queue_order(convs)
