"""The Telegram channel plugin (``telegram``): webhook or long polling in, Bot API out.

Inbound, one of:

- Webhook ``POST /telegram/{bot_name}`` (``bot_name`` = ``SWITCHBOARD_TELEGRAM_BOT_NAME``):
  the ``X-Telegram-Bot-Api-Secret-Token`` header is checked in constant time before the body is
  read (401 otherwise), a malformed Update answers 400, a body over ``max_body_bytes`` 413. The
  answer (an empty 200) is sent only after ``hub.ingest`` returned; 503 while draining, so
  Telegram redelivers. When ``SWITCHBOARD_PUBLIC_URL`` is set, :meth:`start` registers
  ``{public_url}/telegram/{bot_name}`` with ``setWebhook`` (with the secret token and
  :data:`~channels.telegram.polling.ALLOWED_UPDATES`).
- Long polling (``SWITCHBOARD_TELEGRAM_POLLING=true``): ``deleteWebhook``, then a
  ``getUpdates`` loop (:mod:`channels.telegram.polling`).

Both feed :meth:`TelegramChannel.dispatch`. Albums are buffered into one envelope
(:mod:`channels.telegram.media_group`); inline-keyboard presses are answered with
``answerCallbackQuery`` after ingest; a group's upgrade to a supergroup (``migrate_to_chat_id``)
is recorded in the old conversation's meta (``telegram_chat_id``) so its session continues in
the new chat, inbound and outbound.

Outbound (:meth:`send`): Telegram HTML (:mod:`channels.telegram.render`) in parts of at most
4,096 characters, the first part replying to the customer's message, buttons as an inline
keyboard on the last part (``callback_data`` = action id), typing as ``sendChatAction``.
PTB's ``RetryAfter`` becomes :class:`~bot.errors.RateLimited`, network errors
:class:`~bot.errors.ChannelUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from cachetools import TTLCache
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.channel import HubAPI, Ignored, ParseResult
from bot.config import Settings
from bot.envelope import (
    Action,
    Attachment,
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
)
from bot.errors import (
    ChannelUnavailable,
    ConfigError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SwitchboardError,
)
from channels.telegram.media_group import MediaGroupBuffer
from channels.telegram.polling import ALLOWED_UPDATES, Poller, retry_after_seconds
from channels.telegram.render import render_message
from channels.telegram.translate import (
    CHANNEL,
    FILE_REF_PREFIX,
    GROUP_MODES,
    Address,
    Migration,
    ParseContext,
    address_of,
    chat_session_key,
    decode_json,
    decode_update,
    media_group_id,
    parse_recorded,
    parse_update,
)
from channels.telegram.verify import SECRET_HEADER, verify_secret_token, webhook_secret

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_URL = "https://api.telegram.org"
META_CHAT_ID = "telegram_chat_id"
"""Conversation meta key: the chat id a migrated group's session now lives in."""
MIGRATION_SCAN_LIMIT = 5000
"""Conversations read at start to rebuild the migrated-chat map (most recent first)."""
MEDIA_GROUP_WINDOW_S = 0.6
MAX_CALLBACK_DATA_BYTES = 64
_REMEMBERED = 50_000
_REMEMBER_S = 24 * 3600.0


class TelegramRejected(SwitchboardError):
    """Telegram refused a request for good (bot blocked, chat not found, bad request).

    Not retried by the hub: sending it again would fail the same way.
    """


def api_urls(settings: Settings) -> tuple[str, str]:
    """PTB's ``base_url`` and ``base_file_url`` for ``SWITCHBOARD_TELEGRAM_API_URL``.

    The setting is the Bot API server root (default ``https://api.telegram.org``); methods
    are called at ``{root}/bot{token}/{method}`` and files fetched from
    ``{root}/file/bot{token}/{file_path}``.
    """
    root = (settings.telegram_api_url or DEFAULT_API_URL).rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


def make_bot(settings: Settings) -> Bot:
    """A PTB ``Bot`` for the configured token and API URL (not initialized).

    Raises:
        ConfigError: when ``SWITCHBOARD_TELEGRAM_BOT_TOKEN`` is not set.
    """
    if settings.telegram_bot_token is None:
        raise ConfigError("SWITCHBOARD_TELEGRAM_BOT_TOKEN is not set")
    base_url, base_file_url = api_urls(settings)
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=base_url,
        base_file_url=base_file_url,
    )


def webhook_url(settings: Settings) -> str:
    """``{public_url}/telegram/{bot_name}``.

    Raises:
        ConfigError: when ``SWITCHBOARD_PUBLIC_URL`` is not set.
    """
    if not settings.public_url:
        raise ConfigError("SWITCHBOARD_PUBLIC_URL is not set")
    return f"{settings.public_url.rstrip('/')}/telegram/{settings.telegram_bot_name}"


async def set_webhook(settings: Settings, bot: Bot | None = None) -> str:
    """Register the hub's webhook with Telegram (``setWebhook`` with the secret token).

    For a ``switchboard telegram set-webhook`` command. Returns the URL registered.

    Raises:
        ConfigError: missing token or public URL.
        ChannelUnavailable: Telegram cannot be reached.
        RateLimited: Telegram asked to wait.
        TelegramRejected: Telegram refused the URL (e.g. not HTTPS).
    """
    url = webhook_url(settings)
    own = bot is None
    b = bot or make_bot(settings)
    try:
        await _api(
            b.set_webhook(
                url=url,
                secret_token=webhook_secret(settings),
                allowed_updates=list(ALLOWED_UPDATES),
            )
        )
    finally:
        if own:
            await b.shutdown()
    log.info("telegram.webhook_set", extra={"channel": CHANNEL, "url": url})
    return url


async def delete_webhook(settings: Settings, bot: Bot | None = None) -> None:
    """Remove the webhook (``deleteWebhook``), e.g. before long polling.

    Raises:
        ConfigError: missing token.
        ChannelUnavailable: Telegram cannot be reached.
        RateLimited: Telegram asked to wait.
    """
    own = bot is None
    b = bot or make_bot(settings)
    try:
        await _api(b.delete_webhook())
    finally:
        if own:
            await b.shutdown()


async def _api(call: Awaitable[T]) -> T:
    """Await a Bot API call, converting PTB errors to :mod:`bot.errors`.

    Raises:
        RateLimited: ``RetryAfter`` (``retry_after`` seconds).
        TelegramRejected: ``BadRequest``, ``Forbidden``, ``InvalidToken`` and other refusals.
        ChannelUnavailable: network errors and time-outs.
        telegram.error.ChatMigrated: left to the caller, which follows the new chat id.
    """
    try:
        return await call
    except RetryAfter as exc:
        raise RateLimited(str(exc), retry_after=retry_after_seconds(exc)) from exc
    except ChatMigrated:
        raise
    except (BadRequest, Forbidden, InvalidToken) as exc:
        raise TelegramRejected(f"telegram refused: {exc.message}") from exc
    except NetworkError as exc:
        raise ChannelUnavailable(f"telegram unreachable: {exc.message}") from exc
    except TelegramError as exc:
        raise TelegramRejected(f"telegram refused: {exc.message}") from exc


def inline_keyboard(actions: Sequence[Action]) -> InlineKeyboardMarkup | None:
    """One button per row, ``callback_data`` = action id (ids over 64 bytes are left out)."""
    rows = []
    for action in actions:
        if len(action.id.encode()) > MAX_CALLBACK_DATA_BYTES:
            log.warning("telegram.action_id_too_long", extra={"action": action.id})
            continue
        rows.append([InlineKeyboardButton(action.label, callback_data=action.id)])
    return InlineKeyboardMarkup(rows) if rows else None


class TelegramChannel:
    """The Telegram plugin (``telegram``). Enabled when the bot token is set.

    Attributes:
        media_group_window_s: seconds of quiet after an album's last part before it is
            ingested (default 0.6; tests shorten it).
    """

    name: ClassVar[str] = CHANNEL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.telegram_group_mode not in GROUP_MODES:
            raise ConfigError(f"telegram_group_mode must be one of {', '.join(GROUP_MODES)}")
        self._hub: HubAPI | None = None
        self._bot: Bot | None = None
        self._bot_id: int | None = None
        self._bot_username: str | None = settings.telegram_bot_name
        self._secret = webhook_secret(settings) if settings.telegram_bot_token else ""
        self._aliases: dict[int, int] = {}
        """Migrated chat id → the chat id whose session it continues."""
        self._moved: dict[int, int] = {}
        """Chat id in a session key → the chat id to send to now."""
        self._message_ids: TTLCache[tuple[str, str], int] = TTLCache(_REMEMBERED, _REMEMBER_S)
        self._folded: TTLCache[str, bool] = TTLCache(_REMEMBERED, _REMEMBER_S)
        self._sent_parts: TTLCache[str, int] = TTLCache(_REMEMBERED, _REMEMBER_S)
        self._albums = MediaGroupBuffer(self._ingest_album, window_s=MEDIA_GROUP_WINDOW_S)
        self._poller: Poller | None = None
        self._typing_task: asyncio.Task[None] | None = None

    @property
    def media_group_window_s(self) -> float:
        """Seconds of quiet after an album's last part before the album is ingested."""
        return self._albums.window_s

    @media_group_window_s.setter
    def media_group_window_s(self, seconds: float) -> None:
        self._albums.window_s = seconds

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
        return [web.post("/telegram/{bot_name}", self._webhook)]

    async def start(self, hub: HubAPI) -> None:
        """Connect: ``getMe``, rebuild the migration map, register the webhook if configured.

        Long polling is a pull receiver: it runs from :meth:`start_receiving`, in one process
        at a time (:mod:`bot.leader`); ``setWebhook`` is called only when ``hub.receives``.

        Raises:
            ConfigError: no bot token.
            ChannelUnavailable: Telegram (or the configured API URL) cannot be reached.
        """
        self._hub = hub
        bot = make_bot(self.settings)
        await _api(bot.initialize())
        self._bot = bot
        self._bot_id = bot.bot.id
        self._bot_username = bot.bot.username or self.settings.telegram_bot_name
        await self._load_migrations(hub)
        if not self.settings.telegram_polling and self.settings.public_url and hub.receives:
            await set_webhook(self.settings, bot)
        self._typing_task = asyncio.create_task(self._forward_typing(hub), name="telegram-typing")
        log.info(
            "telegram.started",
            extra={
                "channel": CHANNEL,
                "bot": self._bot_username,
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
        if self._bot is None or self._poller is not None:
            return
        await delete_webhook(self.settings, self._bot)
        self._poller = Poller(self._bot, self._handle_batch)
        self._poller.start()
        log.info("telegram.polling", extra={"channel": CHANNEL, "bot": self._bot_username})

    async def stop_receiving(self) -> None:
        """Stop polling; a batch not yet ingested stays unconfirmed (Telegram sends it again)."""
        poller, self._poller = self._poller, None
        if poller is not None:
            await poller.stop()
            log.info("telegram.polling_stopped", extra={"channel": CHANNEL})

    async def stop(self) -> None:
        """Stop polling, ingest pending albums, close the HTTP client."""
        await self.stop_receiving()
        await self._albums.close()
        if self._typing_task is not None:
            self._typing_task.cancel()
            await asyncio.gather(self._typing_task, return_exceptions=True)
        if self._bot is not None:
            await self._bot.shutdown()

    # --- inbound --------------------------------------------------------------------------------
    def context(self, *, verified: bool = True) -> ParseContext:
        """The parse context of this bot (identity from getMe, current migrations)."""
        return ParseContext(
            account=self.settings.telegram_bot_name,
            bot_id=self._bot_id,
            bot_username=self._bot_username,
            group_mode=self.settings.telegram_group_mode,
            verified=verified,
            chat_aliases=self._aliases,
        )

    def _require_hub(self) -> HubAPI:
        if self._hub is None:
            raise web.HTTPServiceUnavailable(reason="hub not started")
        return self._hub

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

    async def _handle_batch(self, batch: Sequence[Update]) -> None:
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
            await self.migrate(result.old_chat_id, result.new_chat_id)
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
            self._message_ids[(msg.session_key, msg.event_id)] = source.message_id
        group = media_group_id(update)
        if group is not None:
            return self._albums.add(f"{msg.session_key}|{group}", msg)
        await self._albums.flush_session(msg.session_key)
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
        if cq is None or self._bot is None:
            return
        try:
            await _api(self._bot.answer_callback_query(cq.id))
        except SwitchboardError as exc:
            log.warning(
                "telegram.callback_answer_failed",
                extra={"channel": CHANNEL, "event_id": str(update.update_id), "error": repr(exc)},
            )

    # --- migration ------------------------------------------------------------------------------
    async def migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        """Let the session of ``old_chat_id`` continue in ``new_chat_id``.

        Later messages of the new chat get the old session key, and replies to that session go
        to the new chat. Persisted as conversation meta ``telegram_chat_id`` of the old
        session (read back at start and before sending).
        """
        canonical = self._aliases.get(old_chat_id, old_chat_id)
        if canonical == new_chat_id:
            return
        self._aliases[new_chat_id] = canonical
        self._moved[canonical] = new_chat_id
        hub = self._require_hub()
        key = chat_session_key(self.context(), chat_id=canonical, chat_type="group")
        if await hub.store.conversation(key) is not None:
            await hub.store.set_meta(key, META_CHAT_ID, new_chat_id)
        log.info(
            "telegram.chat_migrated",
            extra={"channel": CHANNEL, "session_key": key, "new_chat_id": new_chat_id},
        )

    async def _load_migrations(self, hub: HubAPI) -> None:
        for conv in await hub.store.conversations(limit=MIGRATION_SCAN_LIMIT):
            moved = conv.meta.get(META_CHAT_ID)
            if conv.channel != CHANNEL or not isinstance(moved, int):
                continue
            old = address_of(conv.session_key).chat_id
            self._aliases[moved] = old
            self._moved[old] = moved

    async def _address(self, key: SessionKey) -> Address:
        addr = address_of(key)
        moved = self._moved.get(addr.chat_id)
        if moved is None and addr.chat_id < 0 and self._hub is not None:
            conv = await self._hub.store.conversation(key)
            meta = conv.meta.get(META_CHAT_ID) if conv is not None else None
            if isinstance(meta, int):
                moved = self._moved[addr.chat_id] = meta
                self._aliases[meta] = addr.chat_id
        return Address(moved, addr.thread_id) if moved is not None else addr

    # --- outbound -------------------------------------------------------------------------------
    def _require_bot(self) -> Bot:
        if self._bot is None:
            raise ChannelUnavailable("the telegram channel is not started")
        return self._bot

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply (see the module docstring).

        A message in several parts that fails midway resumes after the last part sent when
        the hub retries it (parts sent are counted per message until it is complete), so no
        part is sent twice.

        Raises:
            RateLimited: Telegram's ``RetryAfter``.
            ChannelUnavailable: network errors.
            TelegramRejected: Telegram refused the message for good.
        """
        bot = self._require_bot()
        addr = await self._address(out.session_key)
        if out.kind == OutboundKind.TYPING:
            await self._to_chat(
                out.session_key,
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
            await self._send_part(
                bot, out.session_key, addr, parts[i], reply, keyboard if last else None
            )
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
        key: SessionKey,
        addr: Address,
        html_text: str,
        reply: ReplyParameters | None,
        keyboard: InlineKeyboardMarkup | None,
    ) -> None:
        def call(chat: int) -> Awaitable[Message]:
            return bot.send_message(
                chat,
                html_text,
                parse_mode=ParseMode.HTML,
                message_thread_id=addr.thread_id,
                reply_parameters=reply,
                reply_markup=keyboard,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )

        await self._to_chat(key, addr, call)

    async def _to_chat(
        self, key: SessionKey, addr: Address, call: Callable[[int], Awaitable[T]]
    ) -> T:
        """Call with the session's chat id; on ``ChatMigrated`` follow the new id once."""
        try:
            return await _api(call(addr.chat_id))
        except ChatMigrated as exc:
            await self.migrate(addr.chat_id, exc.new_chat_id)
            try:
                return await _api(call(exc.new_chat_id))
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
        file = await _api(bot.get_file(attachment.ref.removeprefix(FILE_REF_PREFIX)))
        return bytes(await _api(file.download_as_bytearray()))

    async def _forward_typing(self, hub: HubAPI) -> None:
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


def _progress_key(out: OutboundMessage) -> str:
    """Identifies one outbound message across the hub's retries of :meth:`send`."""
    if out.idempotency_key:
        return f"{out.session_key}|{out.idempotency_key}"
    digest = hashlib.sha256(
        f"{out.session_key}|{out.kind}|{out.reply_to}|{out.text}".encode()
    ).hexdigest()
    return digest[:32]
