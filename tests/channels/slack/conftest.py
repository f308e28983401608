"""Fixtures of the Slack tests: the fake Slack Web API and a served hub with the channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from channels.memory.pytest_plugin import HubFactory
from channels.slack.plugin import SlackChannel
from tests.channels.slack.harness import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    TEAM,
    Client,
    slack_settings,
)
from tests.channels.support import serve_hub
from tests.fakes.slack_api import BotIdentity, FakeSlackApi


@pytest_asyncio.fixture
async def slack_api() -> AsyncIterator[FakeSlackApi]:
    api = FakeSlackApi(
        bots={BOT_TOKEN: BotIdentity(TEAM, BOT_USER, BOT_ID)},
        users={
            "UAGENT": {
                "id": "UAGENT",
                "name": "ada",
                "real_name": "Ada Lovelace",
                "profile": {"display_name": "Ada", "real_name": "Ada Lovelace"},
            }
        },
    )
    await api.start()
    yield api
    await api.stop()


SlackServer = Callable[..., Awaitable[tuple[Any, Client]]]


@pytest_asyncio.fixture
async def slack_server(
    hub_factory: HubFactory, slack_api: FakeSlackApi
) -> AsyncIterator[SlackServer]:
    """``await slack_server(**setting_overrides) -> (hub, client)``: a served hub with Slack."""
    stack: list[Any] = []

    async def make(**overrides: Any) -> tuple[Any, Client]:
        hub = await hub_factory(channels=(SlackChannel,), **slack_settings(slack_api, **overrides))
        cm = serve_hub(hub)
        client = await cm.__aenter__()
        stack.append(cm)
        return hub, client

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
