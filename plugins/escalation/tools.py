"""The ``escalate_to_human`` tool: the model hands the conversation to a person."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import BaseModel, Field

from bot.tools import ToolContext, ToolResult

log = logging.getLogger(__name__)

ESCALATION_REASON = "agent_tool"
"""The escalation reason recorded when the model escalates (``Conversation.escalation_reason``)."""


class EscalateArgs(BaseModel):
    """Arguments of ``escalate_to_human``."""

    reason: str = Field(
        min_length=1,
        max_length=300,
        description="Why a person is needed (e.g. 'customer asked for a person').",
    )
    summary: str = Field(
        default="",
        max_length=2000,
        description="A short summary of the customer's problem for the human agent.",
    )


class EscalateToHuman:
    """Put the session on the human queue.

    Calls ``ctx.escalate("agent_tool", summary)`` (the model's reason and summary make the
    summary) once per turn and sets ``ctx.escalated``. Result content: ``{"escalated": true,
    "message": ...}``.
    """

    name: ClassVar[str] = "escalate_to_human"
    description: ClassVar[str] = (
        "Hand the conversation to a human support agent. Use it when the customer asks for a "
        "person, or when you cannot help from the knowledge base and the tools."
    )
    args_model: ClassVar[type[BaseModel]] = EscalateArgs

    async def __call__(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        """Escalate (idempotent within one turn)."""
        a = EscalateArgs.model_validate(args)
        if not ctx.escalated:
            summary = f"Reason: {a.reason}" + (f"\n\n{a.summary}" if a.summary else "")
            await ctx.escalate(ESCALATION_REASON, summary)
            ctx.escalated = True
            log.info(
                "tool.escalated",
                extra={"session_key": ctx.session_key, "channel": ctx.channel},
            )
        return ToolResult(
            content={
                "escalated": True,
                "message": "A human agent will take over; tell the customer so, briefly.",
            }
        )
