"""The ticket backend contract (:mod:`tests.plugins.ticketing.contract`) on local, Zendesk, Jira.

Zendesk and Jira run their real SDKs against the fake servers of
:mod:`tests.fakes.ticket_systems`; the backends are built as ``bot.compose.ticket_backend``
builds them, on a SQLite hub database in ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.compose import ticket_backend
from bot.config import Settings
from bot.store import open_store
from bot.tools import TicketBackend
from tests.fakes.jira_api import FakeJira
from tests.fakes.zendesk_api import FakeZendesk
from tests.plugins.ticketing.contract import TicketBackendContract


def zendesk_settings(fake: FakeZendesk, data_dir: Path, **extra: Any) -> Settings:
    """Settings of a hub whose tickets live in the fake Zendesk."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "ticket_backend": "zendesk",
        "zendesk_url": fake.url,
        "zendesk_email": fake.email,
        "zendesk_api_token": fake.token,
        "zendesk_webhook_secret": "zd-signing-secret",
    }
    return Settings(**(values | extra))


def jira_settings(fake: FakeJira, data_dir: Path, **extra: Any) -> Settings:
    """Settings of a hub whose tickets live in the fake Jira Service Management."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "ticket_backend": "jira",
        "jira_url": fake.url,
        "jira_email": fake.email,
        "jira_api_token": fake.token,
        "jira_service_desk_id": fake.desk_id,
        "jira_request_type_id": "12",
        "jira_webhook_secret": "jira-webhook-secret",
    }
    return Settings(**(values | extra))


async def _backend(settings: Settings) -> AsyncIterator[TicketBackend]:
    store = await open_store(settings)
    tickets = ticket_backend(settings, store)
    try:
        yield tickets
    finally:
        close = getattr(tickets, "close", None)
        if close is not None:
            await close()
        await store.close()


class TestLocal(TicketBackendContract):
    @pytest_asyncio.fixture
    async def tickets(self, tmp_path: Path) -> AsyncIterator[TicketBackend]:
        async for backend in _backend(Settings(data_dir=tmp_path / "data")):
            yield backend


class TestZendesk(TicketBackendContract):
    @pytest_asyncio.fixture
    async def tickets(self, tmp_path: Path) -> AsyncIterator[TicketBackend]:
        async with FakeZendesk() as fake:
            async for backend in _backend(zendesk_settings(fake, tmp_path / "data")):
                yield backend


class TestJira(TicketBackendContract):
    @pytest_asyncio.fixture
    async def tickets(self, tmp_path: Path) -> AsyncIterator[TicketBackend]:
        async with FakeJira() as fake:
            async for backend in _backend(jira_settings(fake, tmp_path / "data")):
                yield backend
