from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from channels.memory.pytest_plugin import HubFactory
from channels.rest.plugin import RestChannel
from tests.channels.contract import ChannelContract
from tests.channels.support import RestHarness, serve_hub


class TestRestContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(self, hub_factory: HubFactory) -> AsyncIterator[RestHarness]:
        hub = await hub_factory(channels=(RestChannel,))
        async with serve_hub(hub) as client:
            h = RestHarness(hub, client)
            yield h
            await h.close()
