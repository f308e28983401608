"""The turn handler: decides who answers a lane's turn and runs it.

Per turn: look up the session mode; while a human owns the session (``queued``/``human``) the bot
stays silent (the customer's messages are already stored and shown in the console); the answer
to an open CSAT survey (:mod:`bot.desk.csat`) is taken out of the turn; a customer
who asks for a person is escalated; otherwise the support agent answers, and its escalations,
failures and timeouts go to the human queue with an honest notice to the customer.

Streaming: when ``settings.llm_stream`` is on and the session's channel is a
:class:`~bot.channel.StreamingChannel`, the agent's partial answer is shown through an
:class:`~bot.streaming.AnswerStream` (throttled edits of one message, keyed by the answer's
idempotency key ``answer:{event_id}``). The stream is closed before the final answer goes out
through :meth:`TurnHost.deliver` (the one send path, with its retries), which edits the
streamed message into the final answer. A turn that ends without answer text
(escalation, failure, interrupt) removes its partial message. Notices, handoff messages and
human agents' replies are never streamed.

The router sees its host (the hub) only through :class:`TurnHost`, which it defines: it never
imports the hub.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, cast

from bot import tracing
from bot.agent import AgentReply, SupportAgent, TurnInput
from bot.channel import ChannelPlugin, StreamingChannel
from bot.config import QueueMode, Settings
from bot.desk.csat import META_KEY
from bot.envelope import (
    TALK_TO_HUMAN,
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
)
from bot.handoff import Handoff
from bot.human_request import wants_human
from bot.lanes.base import Turn
from bot.observability import Metrics
from bot.retrieval import Retriever
from bot.store.base import Role, SessionMode, Store, StoredMessage
from bot.streaming import AnswerStream
from bot.tools import CrmBackend, TicketBackend, ToolContext
from bot.tracing import Span

log = logging.getLogger(__name__)

OVERFLOW_NOTICE = (
    "You sent several messages while I was still answering. I have kept all of them and will "
    "answer them together."
)
FAILURE_NOTICE = (
    "Sorry, something went wrong on our side while answering. A person from our team will "
    "follow up here."
)


class TurnHost(Protocol):
    """What the router needs of the process it runs turns for (:class:`bot.hub.Hub` has it).

    Members are read at every turn, so a host may swap its agent or retriever between turns.
    """

    @property
    def settings(self) -> Settings:
        """The configuration (timeouts, typing delay, streaming, citations, history)."""

    @property
    def store(self) -> Store:
        """Session modes, history, and the handled marks of a turn's messages."""

    @property
    def metrics(self) -> Metrics:
        """Turn counters and timings."""

    @property
    def agent(self) -> SupportAgent:
        """Answers a turn."""

    @property
    def handoff(self) -> Handoff:
        """Escalates a session to the human queue."""

    @property
    def tickets(self) -> TicketBackend:
        """The ticket backend handed to the agent's tools."""

    @property
    def crm(self) -> CrmBackend | None:
        """The CRM backend handed to the agent's tools (None: no CRM configured)."""

    @property
    def channels(self) -> Mapping[str, ChannelPlugin]:
        """Channel plugins by name (the session's channel may stream the answer)."""

    @property
    def retriever_or_empty(self) -> Retriever:
        """The knowledge base, or a retriever that finds nothing."""

    async def deliver(self, out: OutboundMessage) -> StoredMessage:
        """Store, publish and send an outbound message (the one send path, with retries).

        Returns:
            The stored message (the earlier one when ``idempotency_key`` was delivered).
        """

    def publish_typing(self, key: SessionKey) -> None:
        """Tell live viewers that the bot is composing a reply in session ``key``."""

    def forget_ingest_times(self, key: SessionKey, messages: Sequence[InboundMessage]) -> None:
        """Drop latency bookkeeping of a finished turn's messages."""


class Router:
    """Runs turns for a :class:`TurnHost` (the lanes' ``TurnHandler``)."""

    def __init__(self, hub: TurnHost) -> None:
        self.hub = hub
        self._cleanups: set[asyncio.Task[None]] = set()

    async def handle(self, turn: Turn) -> None:
        """Run one turn; never raises except ``CancelledError`` (interrupt mode).

        The turn's messages are marked handled once it ends, whatever the outcome, so a restart
        does not answer them again; a turn cancelled by an interrupt leaves them unhandled (the
        next turn carries them).
        """
        hub = self.hub
        messages = turn.all_messages
        last = messages[-1]
        started = time.monotonic()
        hub.metrics.active_turns.inc()
        ctx = tracing.record_lane_wait(messages[0].trace_context) if tracing.enabled() else None
        attributes: dict[str, str | int] = {
            "messaging.system": last.channel,
            "switchboard.messages": len(messages),
        }
        try:
            with tracing.span(Span.TURN, context=ctx, attributes=attributes):
                await self._run(turn, last)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            hub.metrics.turn_failures.labels(type(exc).__name__).inc()
            log.exception(
                "router.turn_failed",
                extra={
                    "session_key": turn.session_key,
                    "event_id": last.event_id,
                    "channel": last.channel,
                },
            )
            await self._fail_safe(turn.session_key, last)
        finally:
            hub.metrics.active_turns.dec()
            hub.metrics.turn_seconds.observe(time.monotonic() - started)
        await hub.store.mark_handled(turn.session_key, [m.event_id for m in messages])
        hub.forget_ingest_times(turn.session_key, messages)

    async def _run(self, turn: Turn, last: InboundMessage) -> None:
        hub = self.hub
        key = turn.session_key
        conv = await hub.store.conversation(key)
        mode = conv.mode if conv is not None else SessionMode.BOT
        if mode in (SessionMode.QUEUED, SessionMode.HUMAN):
            log.info(
                "router.human_owned",
                extra={"session_key": key, "event_id": last.event_id, "mode": str(mode)},
            )
            if conv is not None:  # the human may work in the ticket (Zendesk, Jira)
                await hub.handoff.copy_to_ticket(conv, turn.all_messages)
            return
        if mode == SessionMode.CLOSED:
            await hub.store.set_mode(key, SessionMode.BOT, expect=[SessionMode.CLOSED])
        if conv is not None and conv.meta.get(META_KEY) is not None:
            # An open CSAT survey: a rating is stored and thanked, anything else goes on.
            rest = await hub.handoff.survey.take(conv, turn.all_messages)
            if not rest:
                return
            if len(rest) < len(turn.all_messages):
                kept = {m.event_id for m in rest}
                msgs = [m for m in turn.messages if m.event_id in kept]
                over = [m for m in turn.overflow if m.event_id in kept]
                if not msgs:
                    msgs, over = over[-1:], over[:-1]
                turn = dataclasses.replace(turn, overflow=over, messages=msgs)
                last = turn.messages[-1]
        if any(m.action == TALK_TO_HUMAN.id or wants_human(m.text) for m in turn.all_messages):
            await self._escalate(key, "customer_request")
            return
        if turn.mode == QueueMode.FOLLOWUP and len(turn.messages) > 1:
            # followup promises one answer per message: answer them one by one, in order.
            for msg in turn.messages:
                if not await self._answer(turn, [msg]):
                    return
            return
        await self._answer(turn, turn.messages)

    async def _answer(self, turn: Turn, messages: list[InboundMessage]) -> bool:
        """Ask the agent and deliver its reply; False when the session was escalated."""
        hub = self.hub
        key = turn.session_key
        last = messages[-1]
        turn_ids = {m.event_id for m in turn.all_messages}
        limit = hub.settings.agent_history_messages

        async def history() -> list[StoredMessage]:
            recent = await hub.store.recent(key, limit + len(turn_ids))
            return [m for m in recent if not (m.role == Role.CUSTOMER and m.event_id in turn_ids)][
                -limit:
            ]

        escalated: list[str] = []

        async def escalate(reason: str, summary: str) -> None:
            escalated.append(reason)
            await hub.handoff.escalate(key, reason, summary=summary or None)

        ctx = ToolContext(
            session_key=key,
            channel=last.channel,
            customer=last.sender,
            retriever=hub.retriever_or_empty,
            tickets=hub.tickets,
            crm=hub.crm,
            escalate=escalate,
            max_citations=hub.settings.max_citations,
            audit=functools.partial(_audit_tool_call, hub.store, key),
        )
        # Live viewers see "typing" only when the answer takes a moment: an instant answer
        # would make the indicator flash (and cost an event to every ingress for nothing).
        typing: asyncio.TimerHandle | None = None
        if hub.settings.typing_delay_s > 0:
            typing = asyncio.get_running_loop().call_later(
                hub.settings.typing_delay_s, hub.publish_typing, key
            )
        else:
            hub.publish_typing(key)
        template = OutboundMessage(
            session_key=key,
            text="",
            reply_to=last.event_id,
            kind=OutboundKind.ANSWER,
            idempotency_key=f"answer:{last.event_id}",
        )
        stream = self._answer_stream(template)
        try:
            async with asyncio.timeout(hub.settings.turn_timeout_s):
                reply: AgentReply = await hub.agent.respond(
                    TurnInput(
                        session_key=key,
                        channel=last.channel,
                        customer=last.sender,
                        messages=messages,
                        overflow=turn.overflow,
                        history=history,
                        tools=ctx,
                        stream=None if stream is None else stream.push,
                    )
                )
        except asyncio.CancelledError:
            if stream is not None:  # interrupted: clean up without delaying the cancellation
                task = asyncio.create_task(stream.discard(), name="router.stream_discard")
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
            raise
        except Exception:
            if stream is not None:
                await stream.discard()
            raise
        finally:
            if typing is not None:
                typing.cancel()
        if stream is not None:
            if reply.text:
                await stream.close()  # the final answer below must be the last edit
            else:
                await stream.discard()
        if reply.text:
            await hub.deliver(
                template.model_copy(
                    update={
                        "text": reply.text,
                        "citations": tuple(reply.citations[: hub.settings.max_citations]),
                        "actions": tuple(reply.actions),
                    }
                )
            )
        if reply.escalate and not escalated:
            if reply.escalate == "no_answer" and not hub.settings.handoff_on_no_answer:
                return True
            await self._escalate(key, reply.escalate)
        return not (reply.escalate or escalated)

    def _answer_stream(self, template: OutboundMessage) -> AnswerStream | None:
        """A stream for this answer, or None (streaming off, or the channel cannot edit)."""
        settings = self.hub.settings
        if not settings.llm_stream:
            return None
        channel = self.hub.channels.get(channel_of(template.session_key))
        if channel is None or not _can_stream(type(channel)):
            return None
        streaming = cast(StreamingChannel, channel)
        return AnswerStream(streaming, template, interval_s=settings.stream_interval_s)

    async def _escalate(self, key: SessionKey, reason: str) -> None:
        await self.hub.handoff.escalate(key, reason)

    async def _fail_safe(self, key: SessionKey, last: InboundMessage) -> None:
        """After a failed turn: hand the session to a human, or at least tell the customer."""
        hub = self.hub
        try:
            await hub.handoff.escalate(key, "turn_failed")
        except Exception:
            log.exception("router.escalation_failed", extra={"session_key": key})
            try:
                await hub.deliver(
                    OutboundMessage(
                        session_key=key,
                        text=FAILURE_NOTICE,
                        reply_to=last.event_id,
                        kind=OutboundKind.NOTICE,
                        actions=(TALK_TO_HUMAN,),
                        idempotency_key=f"failure:{last.event_id}",
                    )
                )
            except Exception:
                log.exception("router.notice_failed", extra={"session_key": key})

    async def on_overflow(self, key: SessionKey, count: int) -> None:
        """Tell the customer their burst of messages was folded into the next turn."""
        log.warning("lane.overflow", extra={"session_key": key, "folded": count})
        await self.hub.deliver(
            OutboundMessage(session_key=key, text=OVERFLOW_NOTICE, kind=OutboundKind.NOTICE)
        )


@functools.cache
def _can_stream(cls: type) -> bool:
    """Whether a channel class implements :class:`StreamingChannel` (per class, once).

    A runtime protocol check walks the protocol's members on every call (a measurable share
    of a turn's CPU in the scale-out bench).
    """
    return issubclass(cls, StreamingChannel)


async def _audit_tool_call(store: Store, key: SessionKey, tool: str, outcome: str) -> None:
    """The audit entry of one tool call: actor ``bot``, the tool and its outcome (no arguments)."""
    await store.audit("bot", "tool_call", key, {"tool": tool, "outcome": outcome})
