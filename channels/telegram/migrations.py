"""Groups upgraded to supergroups: their session continues in the new chat, in and out.

Telegram gives a group a new chat id when it becomes a supergroup (``migrate_to_chat_id`` in
the old chat, ``ChatMigrated`` on a send to it). :class:`ChatMigrations` records the move in
the old conversation's meta (``telegram_chat_id``), so later messages of the new chat get the
old session key and replies to that session go to the new chat; the map is rebuilt at start.

Source: https://core.telegram.org/bots/api#message (``migrate_to_chat_id``,
``migrate_from_chat_id``), https://core.telegram.org/bots/api#responseparameters
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.channel import HubAPI
from bot.envelope import SessionKey
from channels.telegram.translate import (
    CHANNEL,
    Address,
    ParseContext,
    address_of,
    chat_session_key,
)

log = logging.getLogger(__name__)

META_CHAT_ID = "telegram_chat_id"
"""Conversation meta key: the chat id a migrated group's session now lives in."""
MIGRATION_SCAN_LIMIT = 5000
"""Conversations read at start to rebuild the migrated-chat map (most recent first)."""


class ChatMigrations:
    """The migrated chats of one bot (see the module docstring).

    Args:
        account: the bot's account in session keys (``telegram_bot_name``).

    Attributes:
        aliases: migrated chat id → the chat id whose session it continues (parsing uses it).
        hub: the hub whose store keeps the moves (None before the channel started).
    """

    def __init__(self, account: str) -> None:
        self.account = account
        self.aliases: dict[int, int] = {}
        self._moved: dict[int, int] = {}
        """Chat id in a session key → the chat id to send to now."""
        self.hub: HubAPI | None = None

    async def migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        """Let the session of ``old_chat_id`` continue in ``new_chat_id``.

        Persisted as conversation meta ``telegram_chat_id`` of the old session (read back at
        start and before sending).

        Raises:
            aiohttp.web.HTTPServiceUnavailable: the channel is not started.
        """
        canonical = self.aliases.get(old_chat_id, old_chat_id)
        if canonical == new_chat_id:
            return
        self.aliases[new_chat_id] = canonical
        self._moved[canonical] = new_chat_id
        hub = self._require_hub()
        ctx = ParseContext(account=self.account, chat_aliases=self.aliases)
        key = chat_session_key(ctx, chat_id=canonical, chat_type="group")
        if await hub.store.conversation(key) is not None:
            await hub.store.set_meta(key, META_CHAT_ID, new_chat_id)
        log.info(
            "telegram.chat_migrated",
            extra={"channel": CHANNEL, "session_key": key, "new_chat_id": new_chat_id},
        )

    async def load(self, hub: HubAPI) -> None:
        """Rebuild the map from the stored conversations (the most recent ones)."""
        for conv in await hub.store.conversations(limit=MIGRATION_SCAN_LIMIT):
            moved = conv.meta.get(META_CHAT_ID)
            if conv.channel != CHANNEL or not isinstance(moved, int):
                continue
            old = address_of(conv.session_key).chat_id
            self.aliases[moved] = old
            self._moved[old] = moved

    async def address(self, key: SessionKey) -> Address:
        """The chat (and topic) to send a session's replies to now, after any migration."""
        addr = address_of(key)
        moved = self._moved.get(addr.chat_id)
        if moved is None and addr.chat_id < 0 and self.hub is not None:
            conv = await self.hub.store.conversation(key)
            meta = conv.meta.get(META_CHAT_ID) if conv is not None else None
            if isinstance(meta, int):
                moved = self._moved[addr.chat_id] = meta
                self.aliases[meta] = addr.chat_id
        return Address(moved, addr.thread_id) if moved is not None else addr

    def _require_hub(self) -> HubAPI:
        if self.hub is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        return self.hub
