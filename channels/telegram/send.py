"""Outbound to Telegram: replies in Telegram HTML, inline keyboards, typing, file downloads.

:meth:`TelegramSender.send` renders CommonMark as Telegram HTML (:mod:`channels.telegram.render`)
in parts of at most 4,096 characters, the first part replying to the customer's message,
buttons as an inline keyboard on the last part (``callback_data`` = action id), typing as
``sendChatAction``. A message in several parts that fails midway resumes after the last part
sent when the hub retries it. A send to a group that became a supergroup follows the new chat
id once (:mod:`channels.telegram.migrations`).

Sources: https://core.telegram.org/bots/api#sendmessage,
https://core.telegram.org/bots/api#sendchataction, https://core.telegram.org/bots/api#getfile
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from cachetools import TTLCache
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import ChatMigrated

from bot.channel import HubAPI
from bot.envelope import Action, Attachment, OutboundKind, OutboundMessage, SessionKey, channel_of
from bot.errors import ChannelUnavailable, SwitchboardError
from channels.telegram.bot_api import TelegramRejected, call
from channels.telegram.migrations import ChatMigrations
from channels.telegram.render import render_message
from channels.telegram.translate import CHANNEL, FILE_REF_PREFIX, Address

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CALLBACK_DATA_BYTES = 64
REMEMBERED = 50_000
REMEMBER_S = 24 * 3600.0


def inline_keyboard(actions: Sequence[Action]) -> InlineKeyboardMarkup | None:
    """One button per row, ``callback_data`` = action id (ids over 64 bytes are left out)."""
    rows = []
    for action in actions:
        if len(action.id.encode()) > MAX_CALLBACK_DATA_BYTES:
            log.warning("telegram.action_id_too_long", extra={"action": action.id})
            continue
        rows.append([InlineKeyboardButton(action.label, callback_data=action.id)])
    return InlineKeyboardMarkup(rows) if rows else None


def _progress_key(out: OutboundMessage) -> str:
    """Identifies one outbound message across the hub's retries of :meth:`send`."""
    if out.idempotency_key:
        return f"{out.session_key}|{out.idempotency_key}"
    digest = hashlib.sha256(
        f"{out.session_key}|{out.kind}|{out.reply_to}|{out.text}".encode()
    ).hexdigest()
    return digest[:32]


class TelegramSender:
    """Sends the channel's messages (see the module docstring).

    Args:
        migrations: where a session's chat is now.

    Attributes:
        bot: PTB's initialized ``Bot`` once the channel started (sending before raises
            ChannelUnavailable).
    """

    def __init__(self, migrations: ChatMigrations) -> None:
        self.migrations = migrations
        self.bot: Bot | None = None
        self._message_ids: TTLCache[tuple[str, str], int] = TTLCache(REMEMBERED, REMEMBER_S)
        self._sent_parts: TTLCache[str, int] = TTLCache(REMEMBERED, REMEMBER_S)

    def note_message_id(self, key: SessionKey, event_id: str, message_id: int) -> None:
        """Remember Telegram's id of an inbound message, so a reply to it can quote it."""
        self._message_ids[(key, event_id)] = message_id

    def _require_bot(self) -> Bot:
        if self.bot is None:
            raise ChannelUnavailable("the telegram channel is not started")
        return self.bot

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply (see the module docstring).

        Parts sent are counted per message until it is complete, so no part is sent twice.

        Raises:
            RateLimited: Telegram's ``RetryAfter``.
            ChannelUnavailable: network errors, or the channel is not started.
            TelegramRejected: Telegram refused the message for good.
        """
        bot = self._require_bot()
        addr = await self.migrations.address(out.session_key)
        if out.kind == OutboundKind.TYPING:
            await self._to_chat(
                addr,
                lambda chat: bot.send_chat_action(
                    chat, ChatAction.TYPING, message_thread_id=addr.thread_id
                ),
            )
            return
        author = out.author if out.kind == OutboundKind.AGENT else None
        parts = render_message(out.text, citations=out.citations, author=author)
        keyboard = inline_keyboard(out.actions)
        reply_mid = (
            self._message_ids.get((out.session_key, out.reply_to)) if out.reply_to else None
        )
        progress = _progress_key(out)
        first = self._sent_parts.get(progress, 0)
        for i in range(first, len(parts)):
            last = i == len(parts) - 1
            reply = (
                ReplyParameters(reply_mid, allow_sending_without_reply=True)
                if i == 0 and reply_mid is not None
                else None
            )
            await self._send_part(bot, addr, parts[i], reply, keyboard if last else None)
            self._sent_parts[progress] = i + 1
        self._sent_parts.pop(progress, None)
        log.info(
            "telegram.sent",
            extra={
                "channel": CHANNEL,
                "session_key": out.session_key,
                "kind": str(out.kind),
                "parts": len(parts),
            },
        )

    async def _send_part(
        self,
        bot: Bot,
        addr: Address,
        html_text: str,
        reply: ReplyParameters | None,
        keyboard: InlineKeyboardMarkup | None,
    ) -> None:
        def request(chat: int) -> Awaitable[Message]:
            return bot.send_message(
                chat,
                html_text,
                parse_mode=ParseMode.HTML,
                message_thread_id=addr.thread_id,
                reply_parameters=reply,
                reply_markup=keyboard,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )

        await self._to_chat(addr, request)

    async def _to_chat(self, addr: Address, request: Callable[[int], Awaitable[T]]) -> T:
        """Call with the session's chat id; on ``ChatMigrated`` follow the new id once."""
        try:
            return await call(request(addr.chat_id))
        except ChatMigrated as exc:
            await self.migrations.migrate(addr.chat_id, exc.new_chat_id)
            try:
                return await call(request(exc.new_chat_id))
            except ChatMigrated as again:
                raise TelegramRejected(f"chat migrated twice: {again}") from again

    async def fetch_attachment(self, attachment: Attachment) -> bytes:
        """Download a file sent by a customer (``getFile``, then the file URL).

        Args:
            attachment: an attachment of a Telegram envelope (``ref`` = ``telegram-file:ID``).

        Returns:
            The file's bytes (Telegram serves files up to 20 MB to bots).

        Raises:
            ValueError: the attachment is not a Telegram file.
            ChannelUnavailable, RateLimited, TelegramRejected: as for :meth:`send`.
        """
        if not attachment.ref or not attachment.ref.startswith(FILE_REF_PREFIX):
            raise ValueError(f"not a telegram file: {attachment.ref!r}")
        bot = self._require_bot()
        file = await call(bot.get_file(attachment.ref.removeprefix(FILE_REF_PREFIX)))
        return bytes(await call(file.download_as_bytearray()))

    async def follow_typing(self, hub: HubAPI) -> None:
        """Show "typing…" in Telegram while a turn of a Telegram session runs."""
        async with hub.events.subscribe(None) as sub:
            async for event in sub:
                if event.type != "typing":
                    continue
                if channel_of(event.session_key) != CHANNEL:
                    continue
                try:
                    await self.send(
                        OutboundMessage(
                            session_key=event.session_key, text="", kind=OutboundKind.TYPING
                        )
                    )
                except (SwitchboardError, ValueError) as exc:
                    log.debug(
                        "telegram.typing_failed",
                        extra={"session_key": event.session_key, "error": repr(exc)},
                    )
