"""The Discord channel plugin: a discord.py 2 gateway client feeding the hub (lifecycle).

What it does (issue 5), and where:

- Inbound (:mod:`channels.discord.receive`): direct messages, mentions that open a support
  thread, follow-ups in the bot's threads, ``/support [question]`` and reply buttons, over the
  gateway with the intents ``guilds``, ``guild_messages``, ``dm_messages`` and
  ``message_content`` (Message Content is a *privileged* intent: enable it for the bot in the
  developer portal, else guild messages arrive without text).
- Outbound (:mod:`channels.discord.send`): replies split at 2,000 characters, a ``Sources``
  embed, buttons, a typing indicator while the hub works on a turn; long rate-limit waits are
  raised as :class:`bot.errors.RateLimited` so the hub reschedules the send.
- discord.py itself (:mod:`channels.discord.client`): the client, error conversion, and
  ``SWITCHBOARD_DISCORD_API_URL``, a process-wide override set in :meth:`DiscordChannel.start`
  and restored in :meth:`DiscordChannel.stop`.
- Pure JSON ↔ envelope: :mod:`channels.discord.translate` (what ``switchboard parse discord
  FILE`` runs), :mod:`channels.discord.models`, :mod:`channels.discord.render`.

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
- A gateway message the hub cannot store now is retried in order, with backoff, for up to
  :data:`~channels.discord.receive.INGEST_RETRY_S` seconds before it is logged as lost.

Messages Discord sends while no process is connected (between a crash and the lease
takeover) are not replayed by Discord; a graceful handover releases the lease at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar

import aiohttp
import discord
from aiohttp import web
from discord import app_commands

from bot.channel import HubAPI, ParseResult
from bot.config import Settings
from bot.envelope import OutboundMessage
from bot.errors import ChannelUnavailable, ConfigError
from channels.discord.client import ActionButton, ApiOverride, SupportClient, make_client
from channels.discord.receive import DiscordReceiver
from channels.discord.send import DiscordSender
from channels.discord.translate import CHANNEL, bot_id_from_token, parse_recorded

log = logging.getLogger(__name__)


class DiscordChannel:
    """The Discord channel plugin (``discord``). See the module docstring.

    Attributes:
        sender: outbound (:class:`~channels.discord.send.DiscordSender`).
        receiver: inbound (:class:`~channels.discord.receive.DiscordReceiver`).
    """

    name: ClassVar[str] = CHANNEL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sender = DiscordSender(settings)
        self.receiver = DiscordReceiver(self.sender)
        self._client: SupportClient | None = None
        self._api = ApiOverride()
        self._gateway_task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._typing_watch: asyncio.Task[None] | None = None

    @property
    def bot_id(self) -> str | None:
        """Our bot's user id once logged in."""
        return self.receiver.bot_id

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
        self.receiver.hub = hub
        self._api.point_api(self.settings.discord_api_url)
        client = make_client(self.receiver)
        self._client = self.sender.client = self.receiver.client = client
        tree = app_commands.CommandTree(client)
        tree.add_command(self.receiver.support_command())
        client.add_dynamic_items(ActionButton)
        self.receiver.install_raw_hooks(client)
        try:
            await client.login(token.get_secret_value())
            assert client.user is not None
            self.receiver.bot_id = str(client.user.id)
            if self.settings.discord_api_url:
                await self._api.point_gateway(client, self.settings.discord_api_url)
        except BaseException as exc:
            await self._close_client()
            self._api.restore()
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
        self._worker = asyncio.create_task(self.receiver.consume(), name="discord-inbox")
        self._typing_watch = asyncio.create_task(
            self.sender.follow_typing(hub), name="discord-typing"
        )
        log.info("discord.started", extra={"channel": CHANNEL, "bot_id": self.bot_id})

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
        log.info("discord.receiving", extra={"channel": CHANNEL, "bot_id": self.bot_id})

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
        await self.receiver.drain(self.settings.drain_timeout_s)
        log.info("discord.receiving_stopped", extra={"channel": CHANNEL})

    async def stop(self) -> None:
        """Stop receiving, close the HTTP session, stop workers, restore the API base URL."""
        await self.stop_receiving()
        for task in (self._typing_watch, self._worker):
            if task is not None:
                task.cancel()
        await self.sender.typing.close()
        for task in (self._typing_watch, self._worker):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_client()
        if self._gateway_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._gateway_task
        self._api.restore()

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply (:meth:`channels.discord.send.DiscordSender.send`).

        Raises:
            RateLimited, ChannelUnavailable, Forbidden, NotFound, PayloadInvalid: as
                :meth:`channels.discord.send.DiscordSender.send`.
        """
        await self.sender.send(out)

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
