"""The Discord channel plugin: a discord.py 2 gateway client feeding the hub.

What it does (issue 5):

- Connects to the gateway with the intents ``guilds``, ``guild_messages``, ``dm_messages`` and
  ``message_content`` (Message Content is a *privileged* intent: enable it for the bot in the
  developer portal, else guild messages arrive without text).
- Direct messages become ``discord:{bot id}:dm:{user id}`` sessions.
- A guild message that mentions the bot starts a public thread from that message (the thread
  has the message's id) and becomes ``discord:{guild}:{channel}:thread:{thread}``; later
  messages in a thread the bot owns continue that session without a mention.
- ``/support [question]`` (registered with :class:`discord.app_commands.CommandTree`) opens a
  support thread and posts a welcome message; in a DM it answers in the DM.
- Replies are split at 2,000 characters, citations go in a ``Sources`` embed, actions are
  buttons (:class:`discord.ui.View` with :class:`ActionButton`, ``custom_id`` = action id); a
  pressed button becomes an inbound message with ``action`` set. A typing indicator runs while
  the hub works on a turn.
- Rate limits: discord.py's HTTP client keeps its per-bucket limits and sleeps on 429; a wait
  longer than :data:`MAX_RATELIMIT_WAIT_S` is raised as :class:`bot.errors.RateLimited` so the
  hub reschedules the send.

``SWITCHBOARD_DISCORD_API_URL`` (e.g. ``http://127.0.0.1:8999/api/v10``) replaces the REST base
URL. discord.py keeps it in the class attributes ``discord.http.Route.BASE`` and
``discord.webhook.async_.Route.BASE`` (interaction responses), so the override is process-wide:
it is set in :meth:`DiscordChannel.start` and restored in :meth:`DiscordChannel.stop`, and one
process talks to one Discord API. With an API URL set, the gateway URL is the one that API's
``GET /gateway/bot`` names (``DiscordWebSocket.DEFAULT_GATEWAY``, also process-wide).

Receiving (a pull receiver, :class:`bot.channel.PullReceiver`): :meth:`DiscordChannel.start`
only logs in over REST (every process, workers included, can send); the gateway is connected
by :meth:`~DiscordChannel.start_receiving`, in one process at a time (:mod:`bot.leader`). The
gateway never redelivers a message, so nothing it delivered may be refused:

- Shutdown stops intake first. :meth:`~DiscordChannel.stop_receiving` closes the gateway
  WebSocket (REST stays up, so running turns still send their replies), then waits until the
  inbox worker has ingested every message already received; the hub calls it before it
  starts draining (and refusing). This was chosen over buffering refused messages on disk
  for the next start: nothing is left to recover, and a lease handover to another process
  loses nothing either.
- A gateway message the hub cannot store now (``BackendUnavailable``: store or Redis down) is
  retried in order, with backoff, for up to :data:`INGEST_RETRY_S` seconds before it is
  logged as lost (``discord.ingest_lost``). A refused button press or ``/support`` is answered
  with an ephemeral "send that again" instead (the customer can retry).

Messages Discord sends while no process is connected (between a crash and the lease
takeover) are not replayed by Discord; a graceful handover releases the lease at once.

Raw gateway JSON (not discord.py objects) goes through :mod:`channels.discord.translate`, the
same pure functions ``switchboard parse discord FILE`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar, cast

import aiohttp
import discord
import yarl
from aiohttp import web
from cachetools import TTLCache
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route as _HttpRoute
from discord.webhook.async_ import Route as _WebhookRoute  # type: ignore[attr-defined]
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from bot.channel import HubAPI, Ignored, Parsed, ParseResult
from bot.config import Settings
from bot.envelope import (
    InboundMessage,
    OutboundKind,
    OutboundMessage,
    SessionKey,
    channel_of,
)
from bot.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    ConfigError,
    Draining,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
)
from channels.discord.translate import (
    CHANNEL,
    MAX_BUTTONS,
    QUESTION_OPTION,
    SUPPORT_COMMAND,
    ThreadContext,
    address_of,
    bot_id_from_token,
    citations_embed,
    interaction_to_result,
    message_to_result,
    parse_channel,
    parse_interaction,
    parse_message,
    parse_recorded,
    render_text,
    split_message,
    thread_context,
    thread_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RATELIMIT_WAIT_S = 30.0
"""Longest 429 wait discord.py sleeps through itself (its minimum); longer ones raise."""
TYPING_REFRESH_S = 8.0
"""Discord shows typing for 10 seconds; it is refreshed this often while a turn runs."""
THREAD_ARCHIVE_MINUTES: Literal[1440] = 1440
ERROR_THREAD_EXISTS = 160004
"""JSON error code: "A thread has already been created for this message"."""

WELCOME = (
    "Hi {mention}, this thread is your support conversation. Ask your question here; "
    "no need to mention me."
)
WELCOME_DM = "Hi! Ask your question here and I'll help, or press a button to reach a person."
BUSY = "We are restarting right now; please send that again in a minute."
INGEST_RETRY_S = 120.0
"""Seconds a gateway message the hub cannot store now is retried before it is logged lost."""


def intents() -> discord.Intents:
    """Gateway intents: guilds, guild messages, direct messages and message content.

    ``message_content`` is privileged: enable "Message Content Intent" on the bot page of the
    developer portal (verified bots in 100+ servers must apply for it).
    """
    return discord.Intents(
        guilds=True, guild_messages=True, dm_messages=True, message_content=True
    )


class _SupportClient(discord.Client):
    """A :class:`discord.Client` that knows its plugin (for button callbacks)."""

    def __init__(self, plugin: DiscordChannel, **options: Any) -> None:
        super().__init__(**options)
        self.plugin = plugin


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"(?P<action>.{1,100})"
):
    """A reply button whose ``custom_id`` is the hub's action id (e.g. ``handoff.request``).

    Registered as a dynamic item, so presses are dispatched after a restart too and no view is
    kept in memory per message.
    """

    def __init__(self, action_id: str, label: str | None = None) -> None:
        style = (
            discord.ButtonStyle.primary
            if action_id == "handoff.request"
            else discord.ButtonStyle.secondary
        )
        super().__init__(
            discord.ui.Button(label=(label or action_id)[:80], custom_id=action_id, style=style)
        )
        self.action_id = action_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[discord.Client],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        """Rebuild the button from a pressed ``custom_id``."""
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["action"], label)

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:
        """Hand the press to the plugin (it becomes an inbound message with ``action``)."""
        client = interaction.client
        if isinstance(client, _SupportClient):
            await client.plugin._on_button(interaction)


class DiscordChannel:
    """The Discord channel plugin (``discord``). See the module docstring."""

    name: ClassVar[str] = CHANNEL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._hub: HubAPI | None = None
        self._client: _SupportClient | None = None
        self._bot_id: str | None = None
        self._gateway_task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._typing_watch: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._threads: TTLCache[str, ThreadContext | None] = TTLCache(10_000, 24 * 3600.0)
        self._dm_channels: TTLCache[str, str] = TTLCache(10_000, 24 * 3600.0)
        self._raw_interactions: TTLCache[str, dict[str, Any]] = TTLCache(1_000, 60.0)
        self._progress: TTLCache[str, int] = TTLCache(10_000, 3600.0)
        self._typing: dict[SessionKey, asyncio.Task[None]] = {}
        self._saved_bases: tuple[str, str] | None = None
        self._saved_gateway: yarl.URL | None = None

    # --- plugin protocol ----------------------------------------------------------------------
    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """True when ``SWITCHBOARD_DISCORD_BOT_TOKEN`` is set."""
        return settings.discord_bot_token is not None

    @classmethod
    def parse_payload(cls, data: bytes, *, filename: str, settings: Settings) -> ParseResult:
        """Parse a recorded ``MESSAGE_CREATE`` / ``INTERACTION_CREATE`` frame or bare object.

        The bot id (for mentions and DM sessions) is read from the token's first segment when
        a token is configured; otherwise DM sessions use the account ``bot``.

        Raises:
            PayloadInvalid: malformed JSON, frame, message or interaction.
        """
        token = settings.discord_bot_token
        bot_id = bot_id_from_token(token.get_secret_value()) if token is not None else None
        return parse_recorded(data, bot_id=bot_id)

    def routes(self) -> Sequence[web.RouteDef]:
        """None: Discord reaches the bot over the gateway WebSocket, not by webhook."""
        return []

    async def start(self, hub: HubAPI) -> None:
        """Log in (``GET /users/@me``) and sync ``/support``; REST sends work from here on.

        The gateway is connected by :meth:`start_receiving` (one process at a time).

        Raises:
            ConfigError: the bot token is missing or Discord rejects it.
            ChannelUnavailable: Discord cannot be reached to log in.
        """
        token = self.settings.discord_bot_token
        if token is None:
            raise ConfigError("SWITCHBOARD_DISCORD_BOT_TOKEN is not set")
        self._hub = hub
        self._point_api(self.settings.discord_api_url)
        client = _SupportClient(
            self,
            intents=intents(),
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
            max_messages=None,
            chunk_guilds_at_startup=False,
        )
        self._client = client
        tree = app_commands.CommandTree(client)
        tree.add_command(self._support_command())
        client.add_dynamic_items(ActionButton)
        self._install_raw_hooks(client)
        try:
            await client.login(token.get_secret_value())
            assert client.user is not None
            self._bot_id = str(client.user.id)
            if self.settings.discord_api_url:
                await self._point_gateway(client)
        except BaseException as exc:
            await self._close_client()
            self._restore_api()
            if isinstance(exc, discord.LoginFailure):
                raise ConfigError(f"Discord rejected the bot token: {exc}") from exc
            if isinstance(exc, discord.HTTPException | aiohttp.ClientError | OSError):
                raise ChannelUnavailable(f"cannot log in to Discord: {exc}") from exc
            raise
        try:
            await tree.sync()
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            log.warning(
                "discord.command_sync_failed", extra={"channel": CHANNEL, "error": repr(exc)}
            )
        self._worker = asyncio.create_task(self._consume(), name="discord-inbox")
        self._typing_watch = asyncio.create_task(self._watch_typing(hub), name="discord-typing")
        log.info("discord.started", extra={"channel": CHANNEL, "bot_id": self._bot_id})

    def receiver_account(self) -> str | None:
        """The bot's user id (from the token): one gateway session per bot."""
        token = self.settings.discord_bot_token
        return bot_id_from_token(token.get_secret_value()) if token is not None else None

    async def start_receiving(self) -> None:
        """Connect the gateway (discord.py reconnects and resumes by itself)."""
        client = self._client
        if client is None or client.is_closed() or self._gateway_task is not None:
            return
        self._gateway_task = asyncio.create_task(self._run_gateway(client), name="discord-gateway")
        log.info("discord.receiving", extra={"channel": CHANNEL, "bot_id": self._bot_id})

    async def stop_receiving(self) -> None:
        """Close the gateway only, then ingest what it already delivered (see the docstring).

        Waits for the inbox for at most ``drain_timeout_s`` seconds (a store that stays down);
        what is left then is ingested later by the inbox worker, until :meth:`stop`.
        """
        task, self._gateway_task = self._gateway_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        client = self._client
        ws = client.ws if client is not None else None
        if ws is not None:
            with contextlib.suppress(OSError, aiohttp.ClientError, ConnectionError):
                await ws.close(code=1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._inbox.join(), self.settings.drain_timeout_s)
        if self._inbox.qsize():
            log.error(
                "discord.inbox_not_ingested",
                extra={"channel": CHANNEL, "messages": self._inbox.qsize()},
            )
        log.info("discord.receiving_stopped", extra={"channel": CHANNEL})

    async def stop(self) -> None:
        """Stop receiving, close the HTTP session, stop workers, restore the API base URL."""
        await self.stop_receiving()
        for task in (self._typing_watch, self._worker, *self._typing.values()):
            if task is not None:
                task.cancel()
        for task in (self._typing_watch, self._worker, *self._typing.values()):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._typing.clear()
        await self._close_client()
        if self._gateway_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._gateway_task
        self._restore_api()

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply: split at 2,000 characters, citations embed, buttons, typing.

        A retried message resumes after the parts already delivered (``idempotency_key``), and
        each part carries a nonce Discord enforces, so a retry never posts a part twice.

        Raises:
            RateLimited: Discord asked to wait longer than discord.py waits by itself.
            ChannelUnavailable: Discord is unreachable or failed (5xx).
            Forbidden: the bot lacks a permission in the channel (403).
            NotFound: the thread or user is gone (404).
            PayloadInvalid: Discord rejected the message (400) or the key is no Discord key.
        """
        client = self._require_client()
        address = address_of(out.session_key)
        if address.channel_id is not None:
            channel_id = address.channel_id
        else:
            assert address.user_id is not None
            channel_id = await self._dm_channel(address.user_id)
        if out.kind == OutboundKind.TYPING:
            await _converted(client.http.send_typing(channel_id))
            return
        self._stop_typing(out.session_key)
        embed_data = citations_embed(out.citations)
        view: discord.ui.View | None = None
        if out.actions:
            view = discord.ui.View(timeout=None)
            for action in out.actions[:MAX_BUTTONS]:
                view.add_item(ActionButton(action.id, action.label))
        await self._post(
            channel_id,
            split_message(render_text(out)),
            embed=discord.Embed.from_dict(embed_data) if embed_data else None,
            view=view,
            idempotency_key=out.idempotency_key,
        )
        log.info(
            "discord.sent",
            extra={"channel": CHANNEL, "session_key": out.session_key, "kind": str(out.kind)},
        )

    # --- outbound helpers ---------------------------------------------------------------------
    async def _post(
        self,
        channel_id: str,
        chunks: list[str],
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        idempotency_key: str | None = None,
        mention_users: bool = False,
    ) -> None:
        """Post ``chunks`` in order; the embed and buttons go with the last one."""
        client = self._require_client()
        target = client.get_partial_messageable(int(channel_id))
        mentions = discord.AllowedMentions(
            everyone=False, roles=False, users=mention_users, replied_user=False
        )
        start = self._progress.get(idempotency_key, 0) if idempotency_key else 0
        for n in range(start, len(chunks)):
            last = n == len(chunks) - 1
            content = chunks[n] or None
            if content is None and not (last and (embed or view)):
                continue
            options: dict[str, Any] = {"allowed_mentions": mentions}
            if last and embed is not None:
                options["embed"] = embed
            if last and view is not None:
                options["view"] = view
            if idempotency_key:
                digest = hashlib.sha256(f"{idempotency_key}:{n}".encode()).hexdigest()
                options["nonce"] = digest[:25]
            await _converted(target.send(content, **options))
            if idempotency_key:
                self._progress[idempotency_key] = n + 1

    async def _dm_channel(self, user_id: str) -> str:
        """The DM channel with ``user_id``: remembered, else ``POST /users/@me/channels``."""
        known = self._dm_channels.get(user_id)
        if known is not None:
            return known
        data = await _converted(self._require_client().http.start_private_message(user_id))
        channel_id = str(data["id"])
        self._dm_channels[user_id] = channel_id
        return channel_id

    # --- typing -------------------------------------------------------------------------------
    async def _watch_typing(self, hub: HubAPI) -> None:
        """Show typing for Discord sessions while the hub composes a reply (``typing`` events)."""
        async with hub.events.subscribe() as sub:
            async for event in sub:
                if channel_of(event.session_key) != CHANNEL:
                    continue
                if event.type == "typing":
                    self._start_typing(event.session_key)
                elif event.type == "message" and event.data.get("role") != "customer":
                    self._stop_typing(event.session_key)

    def _start_typing(self, key: SessionKey) -> None:
        if key in self._typing and not self._typing[key].done():
            return
        self._typing[key] = asyncio.create_task(self._keep_typing(key))

    def _stop_typing(self, key: SessionKey) -> None:
        task = self._typing.pop(key, None)
        if task is not None:
            task.cancel()

    async def _keep_typing(self, key: SessionKey) -> None:
        """``POST /channels/{id}/typing`` every 8 s until the reply is sent or the turn ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.turn_timeout_s
        try:
            while loop.time() < deadline:
                await self.send(
                    OutboundMessage(session_key=key, text="", kind=OutboundKind.TYPING)
                )
                await asyncio.sleep(TYPING_REFRESH_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("discord.typing_failed", extra={"session_key": key}, exc_info=True)
        finally:
            if self._typing.get(key) is asyncio.current_task():
                del self._typing[key]

    # --- inbound ------------------------------------------------------------------------------
    def _install_raw_hooks(self, client: discord.Client) -> None:
        """See the raw JSON of ``MESSAGE_CREATE`` and ``INTERACTION_CREATE`` dispatches.

        discord.py builds its objects in ``ConnectionState.parsers``; the hub translates the raw
        payload itself (:mod:`channels.discord.translate`), so each parser is wrapped: messages
        are queued for the inbox worker (in gateway order), interactions are kept briefly by id
        for the command and button callbacks, then discord.py's own parser runs. Copies are
        kept: discord.py's parsers change the dicts they read (ids become ints).
        """
        parsers: dict[str, Callable[[Any], None]] = client._connection.parsers
        original_message = parsers["MESSAGE_CREATE"]
        original_interaction = parsers["INTERACTION_CREATE"]

        def on_message(data: dict[str, Any]) -> None:
            self._inbox.put_nowait(("MESSAGE_CREATE", copy.deepcopy(data)))
            try:
                original_message(data)
            except Exception:
                log.warning(
                    "discord.dpy_parse_failed", extra={"event": "MESSAGE_CREATE"}, exc_info=True
                )

        def on_interaction(data: dict[str, Any]) -> None:
            if isinstance(data, dict) and "id" in data:
                self._raw_interactions[str(data["id"])] = copy.deepcopy(data)
            try:
                original_interaction(data)
            except Exception:
                log.exception("discord.interaction_parse_failed", extra={"channel": CHANNEL})

        parsers["MESSAGE_CREATE"] = on_message
        parsers["INTERACTION_CREATE"] = on_interaction

    async def _consume(self) -> None:
        """The inbox worker: one gateway message at a time, in order."""
        while True:
            _, data = await self._inbox.get()
            try:
                await self._handle_message(data)
            except Exception:
                log.exception(
                    "discord.message_failed",
                    extra={"channel": CHANNEL, "event_id": str(data.get("id"))},
                )
            finally:
                self._inbox.task_done()

    async def _handle_message(self, data: dict[str, Any]) -> None:
        try:
            msg = parse_message(data)
        except PayloadInvalid as exc:
            log.warning(
                "discord.payload_invalid",
                extra={"channel": CHANNEL, "error": str(exc), "field": exc.field},
            )
            return
        thread = None
        if msg.guild_id is not None and msg.author.id != self._bot_id and not msg.author.bot:
            thread = await self._thread_of(msg.channel_id)
        result = message_to_result(data, bot_id=self._bot_id, thread=thread)
        if isinstance(result, Ignored):
            log.debug(
                "discord.ignored",
                extra={"channel": CHANNEL, "event_id": msg.id, "reason": result.reason},
            )
            return
        env = result.envelope
        if msg.guild_id is None:
            self._dm_channels[msg.author.id] = msg.channel_id
        elif thread is None:
            if not await self._open_thread_from(msg.channel_id, msg.id, env):
                return
            self._threads[msg.id] = ThreadContext(msg.guild_id, msg.channel_id, msg.id, True)
        await self._ingest(env, retry_s=INGEST_RETRY_S)

    async def _open_thread_from(
        self, channel_id: str, message_id: str, env: InboundMessage
    ) -> bool:
        """Start the support thread from the customer's message; False when that failed."""
        client = self._require_client()
        name = thread_name(env.text, f"Support: {env.sender.name or env.sender.id}")
        try:
            await _converted(
                client.http.start_thread_with_message(
                    channel_id,
                    message_id,
                    name=name,
                    auto_archive_duration=THREAD_ARCHIVE_MINUTES,
                )
            )
        except PayloadInvalid as exc:
            if f"{ERROR_THREAD_EXISTS}" not in str(exc):
                log.warning(
                    "discord.thread_failed", extra={"event_id": message_id, "error": str(exc)}
                )
                return False
        except (Forbidden, NotFound, RateLimited, ChannelUnavailable) as exc:
            log.warning(
                "discord.thread_failed",
                extra={"channel": CHANNEL, "event_id": message_id, "error": repr(exc)},
            )
            return False
        return True

    async def _thread_of(self, channel_id: str) -> ThreadContext | None:
        """The thread a guild channel id is, or None for a plain channel (cached).

        Looks in this plugin's cache, then discord.py's channel cache (filled by the gateway),
        then asks ``GET /channels/{id}``.
        """
        if channel_id in self._threads:
            return self._threads[channel_id]
        client = self._require_client()
        ctx: ThreadContext | None = None
        cached = client.get_channel(int(channel_id))
        if isinstance(cached, discord.Thread):
            owned = self._bot_id is not None and str(cached.owner_id) == self._bot_id
            ctx = ThreadContext(str(cached.guild.id), str(cached.parent_id), channel_id, owned)
        elif cached is None:
            try:
                raw = await _converted(client.http.get_channel(channel_id))
                ctx = thread_context(parse_channel(cast(dict[str, Any], raw)), self._bot_id)
            except (Forbidden, NotFound, PayloadInvalid) as exc:
                log.info(
                    "discord.channel_unknown", extra={"channel_id": channel_id, "error": repr(exc)}
                )
        self._threads[channel_id] = ctx
        return ctx

    async def _ingest(self, env: InboundMessage, *, retry_s: float = 0.0) -> bool:
        """Hand a message to the hub; False when the hub refused it (draining, store down).

        Args:
            env: the message.
            retry_s: seconds to keep retrying ``BackendUnavailable`` (exponential backoff up
                to 5 s); 0 refuses at once.
        """
        hub = self._require_hub()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(BackendUnavailable),
                wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
                stop=stop_after_delay(retry_s),
                reraise=True,
            ):
                with attempt:
                    receipt = await hub.ingest(env)
        except (Draining, BackendUnavailable) as exc:
            log.log(
                logging.ERROR if retry_s else logging.WARNING,
                "discord.ingest_lost" if retry_s else "discord.ingest_refused",
                extra={
                    "session_key": env.session_key,
                    "event_id": env.event_id,
                    "error": repr(exc),
                },
            )
            return False
        log.info(
            "discord.accepted",
            extra={
                "channel": CHANNEL,
                "session_key": receipt.session_key,
                "event_id": receipt.event_id,
                "duplicate": receipt.duplicate,
            },
        )
        return True

    # --- interactions -------------------------------------------------------------------------
    def _support_command(self) -> app_commands.Command[Any, ..., None]:
        plugin = self

        @app_commands.describe(question="What do you need help with? (optional)")
        async def support(
            interaction: discord.Interaction[discord.Client], question: str | None = None
        ) -> None:
            await plugin._on_support(interaction)

        return app_commands.Command(
            name=SUPPORT_COMMAND,
            description="Open a support conversation with our team",
            callback=support,
        )

    def _raw_interaction(self, interaction: discord.Interaction[Any]) -> dict[str, Any]:
        raw = self._raw_interactions.pop(str(interaction.id), None)
        if raw is None:
            raise PayloadInvalid(f"interaction {interaction.id} was not seen on the gateway")
        return raw

    async def _on_button(self, interaction: discord.Interaction[Any]) -> None:
        """A pressed action button: ingest it, then acknowledge by removing the buttons."""
        try:
            raw = self._raw_interaction(interaction)
            result = interaction_to_result(raw, bot_id=self._bot_id)
        except PayloadInvalid as exc:
            log.warning("discord.payload_invalid", extra={"channel": CHANNEL, "error": str(exc)})
            await _quietly(interaction.response.defer())
            return
        if isinstance(result, Ignored):
            log.info(
                "discord.ignored", extra={"event_id": str(interaction.id), "reason": result.reason}
            )
            await _quietly(interaction.response.defer())
            return
        if await self._ingest(result.envelope):
            await _quietly(interaction.response.edit_message(view=None))
        else:
            await _quietly(interaction.response.send_message(BUSY, ephemeral=True))

    async def _on_support(self, interaction: discord.Interaction[Any]) -> None:
        """``/support [question]``: open a support thread (guild) or answer in the DM."""
        try:
            raw = self._raw_interaction(interaction)
            inter = parse_interaction(raw)
        except PayloadInvalid as exc:
            log.warning("discord.payload_invalid", extra={"channel": CHANNEL, "error": str(exc)})
            return
        question = inter.option(QUESTION_OPTION)
        invoker = inter.invoker
        if inter.guild_id is None or invoker is None:
            await _quietly(interaction.response.send_message(WELCOME_DM))
            if question:
                await self._ingest_interaction(raw, None)
            return
        await _quietly(interaction.response.defer(ephemeral=True, thinking=True))
        here = (
            thread_context(
                inter.channel.model_copy(update={"guild_id": inter.guild_id}), self._bot_id
            )
            if inter.channel is not None
            else None
        )
        try:
            if here is not None:
                thread_id = here.thread_id
                # /support inside a thread makes it a support thread: no mention needed.
                self._threads[thread_id] = dataclasses.replace(here, owned=True)
            else:
                assert inter.channel_id is not None
                created = await _converted(
                    self._require_client().http.start_thread_without_message(
                        inter.channel_id,
                        name=thread_name(question or "", f"Support: {invoker.display_name}"),
                        auto_archive_duration=THREAD_ARCHIVE_MINUTES,
                        type=11,
                    )
                )
                thread_id = str(created["id"])
                self._threads[thread_id] = ThreadContext(
                    inter.guild_id, inter.channel_id, thread_id, True
                )
                await self._post(
                    thread_id, [WELCOME.format(mention=f"<@{invoker.id}>")], mention_users=True
                )
            if question:
                await self._ingest_interaction(raw, None if here else thread_id)
            await _quietly(
                interaction.edit_original_response(content=f"Your support thread: <#{thread_id}>")
            )
        except (Forbidden, NotFound, RateLimited, ChannelUnavailable, PayloadInvalid) as exc:
            log.warning("discord.support_failed", extra={"channel": CHANNEL, "error": repr(exc)})
            await _quietly(
                interaction.edit_original_response(
                    content="Sorry, I could not open a support thread here. "
                    "Please send me a direct message instead."
                )
            )

    async def _ingest_interaction(self, raw: dict[str, Any], thread_id: str | None) -> None:
        result = interaction_to_result(raw, bot_id=self._bot_id, thread_id=thread_id)
        if isinstance(result, Parsed):
            await self._ingest(result.envelope)

    # --- lifecycle helpers --------------------------------------------------------------------
    async def _run_gateway(self, client: discord.Client) -> None:
        """Keep the gateway connected (discord.py reconnects with backoff by itself)."""
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("discord.gateway_stopped", extra={"channel": CHANNEL})

    async def _close_client(self) -> None:
        if self._client is not None and not self._client.is_closed():
            await self._client.close()

    def _point_api(self, api_url: str | None) -> None:
        """Point discord.py's REST and webhook base URLs at ``api_url`` (process-wide)."""
        if not api_url:
            return
        self._saved_bases = (_HttpRoute.BASE, _WebhookRoute.BASE)
        base = api_url.rstrip("/")
        _HttpRoute.BASE = base
        _WebhookRoute.BASE = base

    async def _point_gateway(self, client: discord.Client) -> None:
        """Use the gateway URL the configured API names (``GET /gateway/bot``), process-wide.

        discord.py connects to ``DiscordWebSocket.DEFAULT_GATEWAY`` unless resuming.

        Raises:
            ChannelUnavailable: the API does not name a gateway.
        """
        try:
            _, url, _ = await client.http.get_bot_gateway()
        except discord.GatewayNotFound as exc:
            raise ChannelUnavailable(f"no gateway at {self.settings.discord_api_url}") from exc
        self._saved_gateway = DiscordWebSocket.DEFAULT_GATEWAY
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

    def _restore_api(self) -> None:
        if self._saved_bases is not None:
            _HttpRoute.BASE, _WebhookRoute.BASE = self._saved_bases
            self._saved_bases = None
        if self._saved_gateway is not None:
            DiscordWebSocket.DEFAULT_GATEWAY = self._saved_gateway
            self._saved_gateway = None

    def _require_client(self) -> _SupportClient:
        if self._client is None or self._client.is_closed():
            raise ChannelUnavailable("the Discord client is not running")
        return self._client

    def _require_hub(self) -> HubAPI:
        if self._hub is None:
            raise ChannelUnavailable("the Discord channel is not started")
        return self._hub

    @property
    def bot_id(self) -> str | None:
        """Our bot's user id once logged in."""
        return self._bot_id


async def _converted(call: Awaitable[T]) -> T:
    """Await a discord.py call, converting its errors to :mod:`bot.errors`.

    Raises:
        RateLimited: ``discord.RateLimited`` or a 429 discord.py gave up on.
        ChannelUnavailable: 5xx, network errors, timeouts.
        Forbidden: 403. NotFound: 404. PayloadInvalid: other 4xx (message and code kept).
    """
    try:
        return await call
    except discord.RateLimited as exc:
        raise RateLimited(str(exc), retry_after=exc.retry_after) from exc
    except discord.Forbidden as exc:
        raise Forbidden(f"Discord: {exc.code} {exc.text}") from exc
    except discord.NotFound as exc:
        raise NotFound(f"Discord: {exc.code} {exc.text}") from exc
    except discord.DiscordServerError as exc:
        raise ChannelUnavailable(f"Discord {exc.status}: {exc.text}") from exc
    except discord.HTTPException as exc:
        if exc.status == 429:
            raise RateLimited(f"Discord 429: {exc.text}", retry_after=1.0) from exc
        raise PayloadInvalid(f"Discord {exc.status} {exc.code}: {exc.text}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ChannelUnavailable(f"Discord unreachable: {exc!r}") from exc


async def _quietly(call: Awaitable[Any]) -> None:
    """Answer an interaction; a failure (expired token, already answered) is only logged."""
    try:
        await call
    except (discord.HTTPException, aiohttp.ClientError) as exc:
        log.warning("discord.interaction_response_failed", extra={"error": repr(exc)})
