"""The support agent: answers a turn from the knowledge base, with tools and citations.

The router calls a :class:`SupportAgent` (:mod:`bot.agent.base`). Implementations:
:class:`LLMAgent` (:mod:`bot.agent.llm`: litellm, a bounded tool-calling loop, history
compaction), :class:`ExtractiveAgent` (:mod:`bot.agent.extractive`: the embedded default when
no model is configured) and :class:`ScriptedAgent` (:mod:`bot.agent.scripted`: a fixed answer,
for benchmarks and tests). The LLM agent's parts: :mod:`bot.agent.prompt` (the request),
:mod:`bot.agent.citations` (numbered sources and ``[n]`` markers), :mod:`bot.agent.tokens`
(token estimates), :mod:`bot.agent.tools` (tools from the ``switchboard.tools`` entry points),
:mod:`bot.agent.redaction` (PII tokens in every request, real values back at the edge).
"""

from __future__ import annotations

# First: sets litellm up (no network at import, quiet) before a submodule imports litellm.
from bot.agent import litellm_setup  # noqa: F401  (imported for its effect)
from bot.agent.base import (
    AgentReply,
    HistoryFn,
    StreamFn,
    SupportAgent,
    TurnInput,
)
from bot.agent.citations import strip_citation_markers
from bot.agent.extractive import ExtractiveAgent
from bot.agent.llm import LLMAgent
from bot.agent.scripted import ScriptedAgent
from bot.agent.tools import load_tools

__all__ = [
    "AgentReply",
    "ExtractiveAgent",
    "HistoryFn",
    "LLMAgent",
    "ScriptedAgent",
    "StreamFn",
    "SupportAgent",
    "TurnInput",
    "load_tools",
    "strip_citation_markers",
]
