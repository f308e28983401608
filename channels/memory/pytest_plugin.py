"""A pytest plugin: real hubs on the memory channel, for the tests of any package.

Register it with ``pytest_plugins = ["channels.memory.pytest_plugin"]`` in a root
``conftest.py``. Fixtures (function-scoped, async where they start things):

- ``scripted_agent``: a :class:`ScriptedAgent` (answers ``Echo: TEXT`` with one citation unless
  the test scripts replies).
- ``hub_settings``: :class:`~bot.config.Settings` with ``data_dir`` in ``tmp_path``, no sample
  knowledge base, a 10 ms debounce.
- ``hub_factory``: ``await hub_factory(channels=(RestChannel, ...), **setting_overrides)``
  builds and starts a real hub (SQL store in ``tmp_path``, memory lanes, the scripted agent);
  every hub it made is stopped at teardown.
- ``memory_hub`` / ``memory_channel``: a started hub with only the memory channel, and that
  channel (``push_message`` / ``pop_message``).

Nothing here mocks the hub: ingest, dedupe, the store, lanes, router and delivery are the real
ones; only the agent is scripted.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import pytest_asyncio

from bot.agent import AgentReply, TurnInput
from bot.channel import ChannelPlugin
from bot.config import Settings
from bot.envelope import Citation
from bot.lanes.base import fold_text
from channels.memory.plugin import MemoryChannel

if TYPE_CHECKING:
    from bot.hub import Hub

ReplyFn = Callable[[TurnInput], AgentReply | Awaitable[AgentReply]]

GUIDE = Citation(
    doc_id="guide", title="User guide", url="https://docs.example.com/guide", score=1.0
)
"""The citation :func:`echo_reply` attaches."""


def echo_reply(turn: TurnInput) -> AgentReply:
    """``Echo: <the turn's text>`` citing :data:`GUIDE`."""
    return AgentReply(text=f"Echo: {fold_text(turn.messages)}", citations=[GUIDE])


class ScriptedAgent:
    """A :class:`~bot.agent.SupportAgent` whose answers the test decides.

    Attributes:
        turns: every turn it was asked to answer, in order.
        replies: replies to give next (FIFO); when empty, ``reply_fn`` answers.
        reply_fn: computes a reply from the turn (sync or async); :func:`echo_reply` by default.
        delay_s: seconds to wait before answering (to observe typing or long polls).
        started: set when the first turn begins.
        answered: set when the first reply is returned.
    """

    def __init__(self, reply_fn: ReplyFn | None = None, *, delay_s: float = 0.0) -> None:
        self.turns: list[TurnInput] = []
        self.replies: deque[AgentReply] = deque()
        self.reply_fn: ReplyFn = reply_fn or echo_reply
        self.delay_s = delay_s
        self.started = asyncio.Event()
        self.answered = asyncio.Event()

    async def respond(self, turn: TurnInput) -> AgentReply:
        """Record the turn and answer it (after ``delay_s`` seconds)."""
        self.turns.append(turn)
        self.started.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.replies:
            reply = self.replies.popleft()
        else:
            made = self.reply_fn(turn)
            reply = await made if inspect.isawaitable(made) else made
        self.answered.set()
        return reply


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test hub: data in ``data_dir``, no sample KB, short debounce."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "sample_kb": False,
        "debounce_ms": 10,
        "drain_timeout_s": 2.0,
        "log_json": False,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def started_hub(
    settings: Settings,
    *,
    agent: ScriptedAgent,
    channels: Sequence[ChannelPlugin],
) -> AsyncIterator[Hub]:
    """Build and start a real hub, yield it, then stop it (drain).

    The hub has the SQL store under ``settings.data_dir``, memory lanes and no knowledge base.
    """
    from bot.compose import build_hub

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    hub = await build_hub(
        settings,
        agent=agent,
        channels=channels,
        load_knowledge=False,
    )
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop(timeout_s=2.0)


class HubFactory(Protocol):
    """``await hub_factory(channels=(MemoryChannel,), **setting_overrides) -> Hub``."""

    def __call__(
        self, *, channels: Sequence[type[ChannelPlugin]] = ..., **overrides: Any
    ) -> Awaitable[Hub]:
        """Build and start a hub with these channel classes and setting overrides."""


@pytest.fixture
def scripted_agent() -> ScriptedAgent:
    """A fresh :class:`ScriptedAgent` (echoes with a citation)."""
    return ScriptedAgent()


@pytest.fixture
def hub_settings(tmp_path: Path) -> Settings:
    """Test settings with the data directory in ``tmp_path``."""
    return make_settings(tmp_path / "data")


@pytest_asyncio.fixture
async def hub_factory(tmp_path: Path, scripted_agent: ScriptedAgent) -> AsyncIterator[HubFactory]:
    """Builds started hubs with the given channel classes and setting overrides."""
    stack: list[Any] = []
    count = 0

    async def make(
        *, channels: Sequence[type[ChannelPlugin]] = (MemoryChannel,), **overrides: Any
    ) -> Hub:
        nonlocal count
        count += 1
        settings = make_settings(tmp_path / f"hub{count}", **overrides)
        cm = started_hub(
            settings, agent=scripted_agent, channels=[cls(settings) for cls in channels]
        )
        hub = await cm.__aenter__()
        stack.append(cm)
        return hub

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@pytest_asyncio.fixture
async def memory_hub(hub_factory: HubFactory) -> Hub:
    """A started hub with only the memory channel."""
    return await hub_factory(channels=(MemoryChannel,))


@pytest.fixture
def memory_channel(memory_hub: Hub) -> MemoryChannel:
    """The memory channel of ``memory_hub``."""
    channel = memory_hub.channels["memory"]
    assert isinstance(channel, MemoryChannel)
    return channel
