from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from channels.memory.pytest_plugin import HubFactory
from channels.webchat.plugin import WebchatChannel
from tests.channels.contract import ChannelContract
from tests.channels.support import WebchatHarness, serve_hub


class TestWebchatContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(self, hub_factory: HubFactory) -> AsyncIterator[WebchatHarness]:
        hub = await hub_factory(channels=(WebchatChannel,))
        async with serve_hub(hub) as client:
            h = WebchatHarness(hub, client)
            await h.connect()
            yield h
            await h.close()
