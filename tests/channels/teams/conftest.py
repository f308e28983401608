"""Fixtures of the Teams tests: the fake Bot Framework and a served hub with the channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from channels.memory.pytest_plugin import ScriptedAgent, make_settings, started_hub
from channels.teams.plugin import TeamsChannel
from tests.channels.support import serve_hub
from tests.channels.teams.harness import TeamsHarness
from tests.fakes.botframework import FakeBotFramework


@pytest_asyncio.fixture
async def fake_bf() -> AsyncIterator[FakeBotFramework]:
    async with FakeBotFramework() as fake:
        yield fake


@pytest_asyncio.fixture
async def teams(
    tmp_path: Path, scripted_agent: ScriptedAgent, fake_bf: FakeBotFramework
) -> AsyncIterator[TeamsHarness]:
    """A started hub with the Teams channel, served on loopback, driven by the harness."""
    settings = make_settings(
        tmp_path / "hub",
        teams_app_id=fake_bf.app_id,
        teams_app_password=fake_bf.app_password,
        teams_openid_metadata_url=fake_bf.openid_url,
    )
    channel = TeamsChannel(settings, login_url=fake_bf.login_url)
    async with (
        started_hub(settings, agent=scripted_agent, channels=[channel]) as hub,
        serve_hub(hub) as client,
    ):
        yield TeamsHarness(hub, client, fake_bf)
