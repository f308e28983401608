"""The Telegram channel plugin (``telegram``): webhook or long polling in, Bot API out.

This module is the lifecycle and wiring. Inbound, one of (:mod:`channels.telegram.receive`):

- Webhook ``POST /telegram/{bot_name}``, its secret token checked before the body is read, the
  answer sent only after ``hub.ingest`` returned. When ``SWITCHBOARD_PUBLIC_URL`` is set,
  :meth:`TelegramChannel.start` registers ``{public_url}/telegram/{bot_name}`` with
  ``setWebhook`` (:mod:`channels.telegram.bot_api`, with the secret token and
  :data:`~channels.telegram.polling.ALLOWED_UPDATES`).
- Long polling (``SWITCHBOARD_TELEGRAM_POLLING=true``): ``deleteWebhook``, then a
  ``getUpdates`` loop (:mod:`channels.telegram.polling`) from
  :meth:`TelegramChannel.start_receiving`.

A group's upgrade to a supergroup (``migrate_to_chat_id``) is recorded in the old
conversation's meta (``telegram_chat_id``, :mod:`channels.telegram.migrations`) so its session
continues in the new chat, inbound and outbound.

Outbound (:mod:`channels.telegram.send`): Telegram HTML (:mod:`channels.telegram.render`) in
parts of at most 4,096 characters, buttons as an inline keyboard, typing as
``sendChatAction``. PTB's ``RetryAfter`` becomes :class:`~bot.errors.RateLimited`, network
errors :class:`~bot.errors.ChannelUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import ClassVar

from aiohttp import web

from bot.channel import HubAPI, Ignored, ParseResult
from bot.config import Settings
from bot.envelope import Attachment, OutboundMessage
from bot.errors import ConfigError
from bot.payload import decode_json
from channels.telegram.bot_api import call, delete_webhook, make_bot, set_webhook
from channels.telegram.migrations import ChatMigrations
from channels.telegram.polling import Poller
from channels.telegram.receive import TelegramReceiver
from channels.telegram.send import TelegramSender
from channels.telegram.translate import (
    CHANNEL,
    GROUP_MODES,
    Migration,
    ParseContext,
    parse_recorded,
)

log = logging.getLogger(__name__)


class TelegramChannel:
    """The Telegram plugin (``telegram``). Enabled when the bot token is set.

    Attributes:
        media_group_window_s: seconds of quiet after an album's last part before it is
            ingested (default 0.6; tests shorten it).
        sender: outbound (:class:`~channels.telegram.send.TelegramSender`).
        receiver: inbound (:class:`~channels.telegram.receive.TelegramReceiver`).
    """

    name: ClassVar[str] = CHANNEL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.telegram_group_mode not in GROUP_MODES:
            raise ConfigError(f"telegram_group_mode must be one of {', '.join(GROUP_MODES)}")
        self.migrations = ChatMigrations(settings.telegram_bot_name)
        self.sender = TelegramSender(self.migrations)
        self.receiver = TelegramReceiver(settings, self.migrations, self.sender)
        self._poller: Poller | None = None
        self._typing_task: asyncio.Task[None] | None = None

    @property
    def media_group_window_s(self) -> float:
        """Seconds of quiet after an album's last part before the album is ingested."""
        return self.receiver.albums.window_s

    @media_group_window_s.setter
    def media_group_window_s(self, seconds: float) -> None:
        self.receiver.albums.window_s = seconds

    # --- plugin protocol ------------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True when ``SWITCHBOARD_TELEGRAM_BOT_TOKEN`` is set."""
        return settings.telegram_bot_token is not None

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded ``Update`` (or a bare ``Message``) for ``switchboard parse``.

        The bot's username is taken to be ``telegram_bot_name``; a migration message is
        reported as Ignored (the running plugin records it).

        Raises:
            PayloadInvalid: malformed JSON, not an object, or a malformed Update/Message.
        """
        ctx = ParseContext(
            account=settings.telegram_bot_name,
            bot_username=settings.telegram_bot_name,
            group_mode=settings.telegram_group_mode,
        )
        result = parse_recorded(decode_json(data), ctx)
        if isinstance(result, Migration):
            return Ignored(
                f"chat {result.old_chat_id} migrated to supergroup {result.new_chat_id}"
            )
        return result

    def routes(self) -> Sequence[web.RouteDef]:
        """``POST /telegram/{bot_name}`` (the webhook)."""
        return self.receiver.routes()

    async def start(self, hub: HubAPI) -> None:
        """Connect: ``getMe``, rebuild the migration map, register the webhook if configured.

        Long polling is a pull receiver: it runs from :meth:`start_receiving`, in one process
        at a time (:mod:`bot.leader`); ``setWebhook`` is called only when ``hub.receives``.

        Raises:
            ConfigError: no bot token.
            ChannelUnavailable: Telegram (or the configured API URL) cannot be reached.
        """
        self.migrations.hub = self.receiver.hub = hub
        bot = make_bot(self.settings)
        await call(bot.initialize())
        self.sender.bot = bot
        self.receiver.bot_id = bot.bot.id
        self.receiver.bot_username = bot.bot.username or self.settings.telegram_bot_name
        await self.migrations.load(hub)
        if not self.settings.telegram_polling and self.settings.public_url and hub.receives:
            await set_webhook(self.settings, bot)
        self._typing_task = asyncio.create_task(
            self.sender.follow_typing(hub), name="telegram-typing"
        )
        log.info(
            "telegram.started",
            extra={
                "channel": CHANNEL,
                "bot": self.receiver.bot_username,
                "mode": "polling" if self.settings.telegram_polling else "webhook",
            },
        )

    def receiver_account(self) -> str | None:
        """The bot's name when long polling (one poller per bot token), else None."""
        return self.settings.telegram_bot_name if self.settings.telegram_polling else None

    async def start_receiving(self) -> None:
        """Long polling: ``deleteWebhook``, then the ``getUpdates`` loop.

        Raises:
            ChannelUnavailable: Telegram cannot be reached.
        """
        bot = self.sender.bot
        if bot is None or self._poller is not None:
            return
        await delete_webhook(self.settings, bot)
        self._poller = Poller(bot, self.receiver.handle_batch)
        self._poller.start()
        log.info("telegram.polling", extra={"channel": CHANNEL, "bot": self.receiver.bot_username})

    async def stop_receiving(self) -> None:
        """Stop polling; a batch not yet ingested stays unconfirmed (Telegram sends it again)."""
        poller, self._poller = self._poller, None
        if poller is not None:
            await poller.stop()
            log.info("telegram.polling_stopped", extra={"channel": CHANNEL})

    async def stop(self) -> None:
        """Stop polling, ingest pending albums, close the HTTP client."""
        await self.stop_receiving()
        await self.receiver.albums.close()
        if self._typing_task is not None:
            self._typing_task.cancel()
            await asyncio.gather(self._typing_task, return_exceptions=True)
        if self.sender.bot is not None:
            await self.sender.bot.shutdown()

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply (:meth:`channels.telegram.send.TelegramSender.send`).

        Raises:
            RateLimited, ChannelUnavailable, TelegramRejected: as
                :meth:`channels.telegram.send.TelegramSender.send`.
        """
        await self.sender.send(out)

    async def fetch_attachment(self, attachment: Attachment) -> bytes:
        """Download a file sent by a customer (:meth:`TelegramSender.fetch_attachment`).

        Raises:
            ValueError, ChannelUnavailable, RateLimited, TelegramRejected: as
                :meth:`channels.telegram.send.TelegramSender.fetch_attachment`.
        """
        return await self.sender.fetch_attachment(attachment)
