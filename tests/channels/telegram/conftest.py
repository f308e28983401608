"""Fixtures of the Telegram tests: a fake Bot API and a hub serving the Telegram webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from channels.memory.pytest_plugin import HubFactory
from channels.telegram.plugin import TelegramChannel
from tests.channels.support import serve_hub
from tests.channels.telegram.harness import TelegramHarness, telegram_settings
from tests.fakes.telegram_api import FakeTelegramAPI

MakeHarness = Callable[..., Awaitable[TelegramHarness]]


@pytest_asyncio.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramAPI]:
    """A started fake Bot API server."""
    async with FakeTelegramAPI() as api:
        yield api


@pytest_asyncio.fixture
async def make_harness(
    hub_factory: HubFactory, telegram_api: FakeTelegramAPI
) -> AsyncIterator[MakeHarness]:
    """``await make_harness(**setting_overrides)``: a served hub with the Telegram channel."""
    servers: list[Any] = []

    async def make(**overrides: Any) -> TelegramHarness:
        hub = await hub_factory(
            channels=(TelegramChannel,), **telegram_settings(telegram_api, **overrides)
        )
        cm = serve_hub(hub)
        client = await cm.__aenter__()
        servers.append(cm)
        return TelegramHarness(hub, client, telegram_api)

    yield make
    for cm in reversed(servers):
        await cm.__aexit__(None, None, None)


@pytest_asyncio.fixture
async def harness(make_harness: MakeHarness) -> TelegramHarness:
    """The default harness: webhook mode, group mode ``mention``."""
    return await make_harness()
