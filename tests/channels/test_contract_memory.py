from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from channels.memory.plugin import MemoryChannel
from channels.memory.pytest_plugin import HubFactory
from tests.channels.contract import ChannelContract
from tests.channels.support import MemoryHarness


class TestMemoryContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(self, hub_factory: HubFactory) -> AsyncIterator[MemoryHarness]:
        hub = await hub_factory(channels=(MemoryChannel,))
        h = MemoryHarness(hub)
        yield h
        await h.close()
