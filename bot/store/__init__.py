"""Persistent stores: conversations, messages, agents and the audit log (SQLAlchemy async)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.store.sql import SqlStore


async def open_store(settings: Settings) -> SqlStore:
    """Create ``settings.data_dir`` and open the SQL store at ``settings.resolved_database_url``.

    Returns:
        The open store; call ``await store.close()`` at shutdown.

    Raises:
        bot.errors.BackendUnavailable: when the database cannot be opened.
    """
    from bot.store.sql import SqlStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore(settings)
    await store.open()
    return store
