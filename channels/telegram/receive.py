"""Inbound from Telegram: the webhook and long-polling batches, into the hub.

Webhook ``POST /telegram/{bot_name}`` (``bot_name`` = ``SWITCHBOARD_TELEGRAM_BOT_NAME``): the
``X-Telegram-Bot-Api-Secret-Token`` header is checked in constant time before the body is read
(401 otherwise), a malformed Update answers 400, a body over ``max_body_bytes`` 413. The answer
(an empty 200) is sent only after ``hub.ingest`` returned; 503 while draining, so Telegram
redelivers. Long polling (:mod:`channels.telegram.polling`) hands its batches to
:meth:`TelegramReceiver.handle_batch`.

Both feed :meth:`TelegramReceiver.dispatch`. Albums are buffered into one envelope
(:mod:`channels.telegram.media_group`); inline-keyboard presses are answered with
``answerCallbackQuery`` after ingest; a group's upgrade to a supergroup is recorded
(:mod:`channels.telegram.migrations`).

Sources: https://core.telegram.org/bots/api#setwebhook (``secret_token``),
https://core.telegram.org/bots/api#update, https://core.telegram.org/bots/api#answercallbackquery
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from cachetools import TTLCache
from telegram import Message, Update

from bot.channel import HubAPI, Ignored
from bot.config import Settings
from bot.envelope import InboundMessage
from bot.errors import NotFound, PayloadTooLarge, SwitchboardError
from bot.payload import decode_json
from channels.telegram.bot_api import call
from channels.telegram.decode import decode_update
from channels.telegram.media_group import MediaGroupBuffer
from channels.telegram.migrations import ChatMigrations
from channels.telegram.send import REMEMBER_S, REMEMBERED, TelegramSender
from channels.telegram.translate import (
    CHANNEL,
    Migration,
    ParseContext,
    media_group_id,
    parse_update,
)
from channels.telegram.verify import SECRET_HEADER, verify_secret_token, webhook_secret

log = logging.getLogger(__name__)

MEDIA_GROUP_WINDOW_S = 0.6


class TelegramReceiver:
    """Telegram's updates, into the hub (see the module docstring).

    Args:
        settings: bot name, group mode, body limit and the webhook secret's source.
        migrations: migrated chats (parsing follows them; migrations are recorded here).
        sender: learns inbound message ids (replies quote them).

    Attributes:
        hub: the hub once the channel started (None answers 503).
        bot_id: the bot's user id (from ``getMe``).
        bot_username: the bot's ``@username`` without ``@`` (from ``getMe``).
        albums: the album buffer (its ``window_s`` is the quiet time before ingest).
    """

    def __init__(
        self, settings: Settings, migrations: ChatMigrations, sender: TelegramSender
    ) -> None:
        self.settings = settings
        self.migrations = migrations
        self.sender = sender
        self.hub: HubAPI | None = None
        self.bot_id: int | None = None
        self.bot_username: str | None = settings.telegram_bot_name
        self._secret = webhook_secret(settings) if settings.telegram_bot_token else ""
        self._folded: TTLCache[str, bool] = TTLCache(REMEMBERED, REMEMBER_S)
        self.albums = MediaGroupBuffer(self._ingest_album, window_s=MEDIA_GROUP_WINDOW_S)

    def routes(self) -> Sequence[web.RouteDef]:
        """``POST /telegram/{bot_name}`` (the webhook)."""
        return [web.post("/telegram/{bot_name}", self._webhook)]

    def context(self, *, verified: bool = True) -> ParseContext:
        """The parse context of this bot (identity from getMe, current migrations)."""
        return ParseContext(
            account=self.settings.telegram_bot_name,
            bot_id=self.bot_id,
            bot_username=self.bot_username,
            group_mode=self.settings.telegram_group_mode,
            verified=verified,
            chat_aliases=self.migrations.aliases,
        )

    def _require_hub(self) -> HubAPI:
        if self.hub is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        return self.hub

    async def _webhook(self, request: web.Request) -> web.Response:
        if request.match_info["bot_name"] != self.settings.telegram_bot_name:
            raise NotFound("no such Telegram bot")
        verify_secret_token(request.headers.get(SECRET_HEADER), self._secret)
        self._require_hub()
        data = await request.read()
        if len(data) > self.settings.max_body_bytes:
            raise PayloadTooLarge(
                f"update is {len(data)} bytes", limit_bytes=self.settings.max_body_bytes
            )
        doc = decode_json(data)
        update = decode_update(doc)
        album = await self.dispatch(update, doc)
        if album is not None:
            await album
        return web.Response(status=200)

    async def handle_batch(self, batch: Sequence[Update]) -> None:
        """Dispatch a ``getUpdates`` batch; return once all of it (albums too) was ingested."""
        albums = []
        for update in batch:
            album = await self.dispatch(update, update.to_dict())
            if album is not None:
                albums.append(album)
        if albums:
            await asyncio.gather(*albums)

    async def dispatch(self, update: Update, raw: dict[str, Any]) -> asyncio.Future[None] | None:
        """Handle one verified Update: ingest it, record a migration, or ignore it.

        Args:
            update: PTB's Update.
            raw: its JSON, kept on the envelope.

        Returns:
            For an album part, the album's future (done once the whole album was ingested;
            await it before acknowledging); otherwise None, once the update was handled.

        Raises:
            bot.errors.Draining, bot.errors.BackendUnavailable: the hub cannot take it now.
        """
        hub = self._require_hub()
        result = parse_update(update, self.context(), raw)
        event_id = str(update.update_id)
        if isinstance(result, Migration):
            await self.migrations.migrate(result.old_chat_id, result.new_chat_id)
            return None
        if isinstance(result, Ignored) or event_id in self._folded:
            reason = result.reason if isinstance(result, Ignored) else "album part seen before"
            log.info(
                "telegram.ignored",
                extra={"channel": CHANNEL, "event_id": event_id, "reason": reason},
            )
            await self._answer_callback(update)
            return None
        msg = result.envelope
        source = update.effective_message
        if isinstance(source, Message):
            self.sender.note_message_id(msg.session_key, msg.event_id, source.message_id)
        group = media_group_id(update)
        if group is not None:
            return self.albums.add(f"{msg.session_key}|{group}", msg)
        await self.albums.flush_session(msg.session_key)
        receipt = await hub.ingest(msg)
        log.info(
            "telegram.accepted",
            extra={
                "channel": CHANNEL,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "duplicate": receipt.duplicate,
            },
        )
        await self._answer_callback(update)
        return None

    async def _ingest_album(self, msg: InboundMessage, part_ids: list[str]) -> None:
        receipt = await self._require_hub().ingest(msg)
        for part in part_ids:
            self._folded[part] = True
        log.info(
            "telegram.album_accepted",
            extra={
                "channel": CHANNEL,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "parts": len(part_ids),
                "duplicate": receipt.duplicate,
            },
        )

    async def _answer_callback(self, update: Update) -> None:
        """Stop the button's spinner (``answerCallbackQuery``); failures are only logged."""
        cq = update.callback_query
        bot = self.sender.bot
        if cq is None or bot is None:
            return
        try:
            await call(bot.answer_callback_query(cq.id))
        except SwitchboardError as exc:
            log.warning(
                "telegram.callback_answer_failed",
                extra={"channel": CHANNEL, "event_id": str(update.update_id), "error": repr(exc)},
            )
