"""A started hub over a real knowledge base, with the REST channel (the admin API tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.agent import SupportAgent
from bot.compose import build_hub
from bot.config import Settings
from bot.hub import Hub
from channels.rest.plugin import RestChannel
from knowledge import KnowledgeBase
from knowledge.embed import Embedder


@asynccontextmanager
async def started_kb_hub(
    settings: Settings, embedder: Embedder, *, agent: SupportAgent | None = None
) -> AsyncIterator[Hub]:
    """Open a knowledge base in ``settings.data_dir``, build and start a hub over it, yield it.

    ``agent`` None: the default agent (curated answers first, then the knowledge base).
    On exit the hub is stopped (its store closed) and the knowledge base closed.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    kb = await KnowledgeBase.open(settings, embedder=embedder)
    hub = await build_hub(settings, agent=agent, retriever=kb, channels=[RestChannel(settings)])
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop(timeout_s=2.0)
        await kb.close()
