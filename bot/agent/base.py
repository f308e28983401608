"""What an agent is: the :class:`SupportAgent` protocol the router calls, and its turn types.

A turn comes in as a :class:`TurnInput` (the customer's messages, lazily loaded history, the
tool context, an optional stream callback) and goes out as an :class:`AgentReply` (answer text,
citations, buttons, an escalation reason).
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

HistoryFn = Callable[[], Awaitable[Sequence[StoredMessage]]]
"""Loads the session's earlier messages (oldest first) when an agent needs them."""

ESCALATE_AGENT_TOOL = "agent_tool"
"""Escalation reason: the model called the ``escalate_to_human`` tool."""

ESCALATE_NO_ANSWER = "no_answer"
"""Escalation reason: the agent has no answer (empty answer, nothing confident retrieved)."""

ESCALATE_TOOL_LOOP = "tool_loop"
"""Escalation reason: the model was still calling tools after its last allowed round."""

ESCALATE_CUSTOMER_REQUEST = "customer_request"
"""Escalation reason: the customer asked for a person."""


@dataclass(slots=True)
class TurnInput:
    """Everything the agent needs for one turn.

    Attributes:
        session_key: the conversation.
        channel: its channel name.
        customer: who is asking (identity as verified by the channel).
        messages: the customer messages this turn answers, oldest first.
        overflow: older messages folded in because the lane overflowed (summarize them).
        history: loads earlier stored messages of the session, oldest first (notes and this
            turn's messages excluded). Loaded on demand: agents that need no history (the
            extractive agent) cost no read.
        tools: the tool context (retriever, tickets, escalation) for this turn.
        stream: called with partial answer text when streaming; None disables streaming.
    """

    session_key: SessionKey
    channel: str
    customer: Participant
    messages: Sequence[InboundMessage]
    overflow: Sequence[InboundMessage]
    history: HistoryFn
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
