"""The support agent: answers a turn from the knowledge base, with tools and citations.

This module holds the :class:`SupportAgent` protocol the router calls, and its implementations:
:class:`LLMAgent` (litellm, a bounded tool-calling loop, history compaction) and
:class:`ExtractiveAgent` (the embedded default when no model is configured: the best supporting
passages with citations when retrieval is confident, escalation otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.envelope import Action, Citation, InboundMessage, Participant, SessionKey
from bot.store.base import StoredMessage
from bot.tools import ToolContext

StreamFn = Callable[[str], Awaitable[None]]
"""Receives the answer text so far (cumulative) while the model streams."""


@dataclass(slots=True)
class TurnInput:
    """Everything the agent needs for one turn.

    Attributes:
        session_key: the conversation.
        channel: its channel name.
        customer: who is asking (identity as verified by the channel).
        messages: the customer messages this turn answers, oldest first.
        overflow: older messages folded in because the lane overflowed (summarize them).
        history: earlier stored messages of the session, oldest first (notes excluded).
        tools: the tool context (retriever, tickets, escalation) for this turn.
        stream: called with partial answer text when streaming; None disables streaming.
    """

    session_key: SessionKey
    channel: str
    customer: Participant
    messages: Sequence[InboundMessage]
    overflow: Sequence[InboundMessage]
    history: Sequence[StoredMessage]
    tools: ToolContext
    stream: StreamFn | None = None


@dataclass(slots=True)
class AgentReply:
    """The agent's answer to a turn.

    Attributes:
        text: CommonMark answer ("" when the agent only escalates).
        citations: documents used, best first.
        actions: buttons to offer (e.g. "Talk to a person").
        escalate: a reason (``no_answer``, ``agent_tool``, ``customer_request``...) when the
            session must go to the human queue; None otherwise.
        usage_tokens: tokens the model used in this turn (0 for the extractive agent).
    """

    text: str
    citations: list[Citation] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    escalate: str | None = None
    usage_tokens: int = 0


class SupportAgent(Protocol):
    """Answers one turn."""

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Produce the reply to ``turn``.

        Raises:
            bot.errors.LLMUnavailable: every model failed; the router escalates.
        """
