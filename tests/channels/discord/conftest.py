"""Fixtures of the Discord tests: a fake Discord (REST + gateway) and hubs connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from channels.discord.plugin import DiscordChannel
from channels.memory.pytest_plugin import HubFactory
from tests.channels.discord.frames import CUSTOMER, DM_CHANNEL, TOKEN
from tests.channels.support import serve
from tests.fakes.discord_api import FakeDiscord

if TYPE_CHECKING:
    from bot.hub import Hub


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A fake Discord API and gateway on 127.0.0.1, port 0."""
    fake = FakeDiscord(token=TOKEN)
    fake.add_dm(CUSTOMER, DM_CHANNEL)
    async with serve(fake.app()) as client:
        fake.base_url = str(client.make_url("")).rstrip("/")
        yield fake
        await fake.close_sockets()


DiscordHubFactory = Callable[..., Awaitable["Hub"]]


@pytest.fixture
def discord_hub_factory(fake_discord: FakeDiscord, hub_factory: HubFactory) -> DiscordHubFactory:
    """``await discord_hub_factory(**overrides)``: a started hub whose client is READY."""

    async def make(**overrides: Any) -> Hub:
        hub = await hub_factory(
            channels=(DiscordChannel,),
            discord_bot_token=TOKEN,
            discord_api_url=fake_discord.base_url + "/api/v10",
            **overrides,
        )
        await fake_discord.wait_ready()
        return hub

    return make


@pytest_asyncio.fixture
async def discord_hub(discord_hub_factory: DiscordHubFactory) -> Hub:
    """A started hub with the Discord channel connected to :func:`fake_discord`."""
    return await discord_hub_factory()
