"""Database fixtures for store and ticket tests: every test runs on SQLite and on PostgreSQL.

PostgreSQL is a throw-away server started once per session (:mod:`tests.fakes.postgres`), or the
server at ``SWITCHBOARD_TEST_POSTGRES_URL`` when set; its tables are dropped before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import Settings
from bot.store import open_store
from bot.store.engine import make_engine
from bot.store.sql import SqlStore
from bot.store.tables import metadata as store_metadata
from plugins.ticketing.local import metadata as ticket_metadata


@pytest.fixture(params=["sqlite", "postgresql"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a fresh, empty database."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    postgres_url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(ticket_metadata.drop_all)
            await conn.run_sync(store_metadata.drop_all)
    finally:
        await engine.dispose()
    return Settings(data_dir=tmp_path / "data", database_url=postgres_url)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlStore]:
    """An open store on ``settings``, closed after the test."""
    s = await open_store(settings)
    yield s
    await s.close()


async def count(settings: Settings, table: str) -> int:
    """Rows in ``table``, read on a connection of its own (works after the store closed)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(sa.text(f"select count(*) from {table}")) or 0)
    finally:
        await engine.dispose()
