from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import tests.channels.contract as contract
from tests.channels.contract import ChannelContract
from tests.channels.discord.frames import recorded
from tests.channels.discord.harness import DiscordHarness
from tests.fakes.discord_api import FakeDiscord

from .conftest import DiscordHubFactory


class TestDiscordContract(ChannelContract):
    @pytest.fixture(autouse=True)
    def _shared_dataset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The recorded Discord payloads are read from ../shared/datasets (never copied here).
        monkeypatch.setattr(contract, "samples", lambda name: recorded())

    @pytest_asyncio.fixture
    async def harness(
        self, fake_discord: FakeDiscord, discord_hub_factory: DiscordHubFactory
    ) -> AsyncIterator[DiscordHarness]:
        hub = await discord_hub_factory()
        h = DiscordHarness(hub, fake_discord)
        yield h
        await h.close()
