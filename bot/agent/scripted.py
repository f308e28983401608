"""The scripted agent: a fixed answer at once, for benchmarks and tests of the hub path.

``switchboard bench`` and ``SWITCHBOARD_AGENT=scripted`` use it so that the figures measure the
hub (ingest, lanes, router, store, delivery) and not a model.
"""

from __future__ import annotations

import asyncio

from bot.agent.base import AgentReply, TurnInput


class ScriptedAgent:
    """A zero-latency agent (optionally sleeping ``delay_s`` seconds) with a fixed answer.

    Attributes:
        delay_s: seconds to wait before answering ``ok``.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Answer at once (or after ``delay_s``)."""
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return AgentReply(text="ok")
