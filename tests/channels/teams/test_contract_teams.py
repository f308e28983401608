from __future__ import annotations

import pytest_asyncio

from tests.channels.contract import ChannelContract
from tests.channels.teams.harness import TeamsHarness


class TestTeamsContract(ChannelContract):
    @pytest_asyncio.fixture
    async def harness(self, teams: TeamsHarness) -> TeamsHarness:
        return teams
