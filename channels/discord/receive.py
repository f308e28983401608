"""Inbound from the Discord gateway: messages, ``/support`` and reply buttons into the hub.

- Direct messages become ``discord:{bot id}:dm:{user id}`` sessions.
- A guild message that mentions the bot starts a public thread from that message (the thread
  has the message's id) and becomes ``discord:{guild}:{channel}:thread:{thread}``; later
  messages in a thread the bot owns continue that session without a mention.
- ``/support [question]`` (registered with :class:`discord.app_commands.CommandTree`) opens a
  support thread and posts a welcome message; in a DM it answers in the DM.
- A pressed reply button becomes an inbound message with ``action`` set.

Raw gateway JSON (not discord.py objects) goes through :mod:`channels.discord.translate`, the
same pure functions ``switchboard parse discord FILE`` runs: the gateway's ``MESSAGE_CREATE``
payloads are queued in gateway order for one inbox worker (:meth:`DiscordReceiver.consume`).
The gateway never redelivers a message, so nothing it delivered may be refused: a message the
hub cannot store now (``BackendUnavailable``: store or Redis down) is retried in order, with
backoff, for up to :data:`INGEST_RETRY_S` seconds before it is logged as lost
(``discord.ingest_lost``). A refused button press or ``/support`` is answered with an ephemeral
"send that again" instead (the customer can retry).

Sources: https://discord.com/developers/docs/events/gateway-events#message-create,
https://discord.com/developers/docs/interactions/receiving-and-responding
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Literal, cast

import discord
from cachetools import TTLCache
from discord import app_commands
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from bot.channel import HubAPI, Ignored, Parsed
from bot.envelope import InboundMessage
from bot.errors import (
    BackendUnavailable,
    ChannelUnavailable,
    Draining,
    Forbidden,
    NotFound,
    PayloadInvalid,
    RateLimited,
)
from channels.discord.client import SupportClient, converted, quietly, require_open
from channels.discord.models import parse_channel, parse_interaction, parse_message
from channels.discord.render import thread_name
from channels.discord.send import DiscordSender
from channels.discord.translate import (
    CHANNEL,
    QUESTION_OPTION,
    SUPPORT_COMMAND,
    ThreadContext,
    interaction_to_result,
    message_to_result,
    thread_context,
)

log = logging.getLogger(__name__)

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


class DiscordReceiver:
    """What the gateway delivers, into the hub (see the module docstring).

    Args:
        sender: posts welcomes and learns DM channels from inbound direct messages.

    Attributes:
        client: the logged-in client (set when the channel starts).
        hub: the hub messages are ingested into.
        bot_id: our bot's user id once logged in.
        inbox: gateway messages not ingested yet, in gateway order.
    """

    def __init__(self, sender: DiscordSender) -> None:
        self.sender = sender
        self.client: SupportClient | None = None
        self.hub: HubAPI | None = None
        self.bot_id: str | None = None
        self.inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._threads: TTLCache[str, ThreadContext | None] = TTLCache(10_000, 24 * 3600.0)
        self._raw_interactions: TTLCache[str, dict[str, Any]] = TTLCache(1_000, 60.0)

    def install_raw_hooks(self, client: discord.Client) -> None:
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
            self.inbox.put_nowait(("MESSAGE_CREATE", copy.deepcopy(data)))
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

    async def consume(self) -> None:
        """The inbox worker: one gateway message at a time, in order (runs until cancelled)."""
        while True:
            _, data = await self.inbox.get()
            try:
                await self._handle_message(data)
            except Exception:
                log.exception(
                    "discord.message_failed",
                    extra={"channel": CHANNEL, "event_id": str(data.get("id"))},
                )
            finally:
                self.inbox.task_done()

    async def drain(self, timeout_s: float) -> None:
        """Wait until the inbox worker ingested what the gateway delivered (at most ``timeout_s``).

        What is left then is logged (``discord.inbox_not_ingested``) and ingested later by the
        inbox worker while it runs.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.inbox.join(), timeout_s)
        if self.inbox.qsize():
            log.error(
                "discord.inbox_not_ingested",
                extra={"channel": CHANNEL, "messages": self.inbox.qsize()},
            )

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
        if msg.guild_id is not None and msg.author.id != self.bot_id and not msg.author.bot:
            thread = await self._thread_of(msg.channel_id)
        result = message_to_result(data, bot_id=self.bot_id, thread=thread)
        if isinstance(result, Ignored):
            log.debug(
                "discord.ignored",
                extra={"channel": CHANNEL, "event_id": msg.id, "reason": result.reason},
            )
            return
        env = result.envelope
        if msg.guild_id is None:
            self.sender.note_dm_channel(msg.author.id, msg.channel_id)
        elif thread is None:
            if not await self._open_thread_from(msg.channel_id, msg.id, env):
                return
            self._threads[msg.id] = ThreadContext(msg.guild_id, msg.channel_id, msg.id, True)
        await self._ingest(env, retry_s=INGEST_RETRY_S)

    async def _open_thread_from(
        self, channel_id: str, message_id: str, env: InboundMessage
    ) -> bool:
        """Start the support thread from the customer's message; False when that failed."""
        client = require_open(self.client)
        name = thread_name(env.text, f"Support: {env.sender.name or env.sender.id}")
        try:
            await converted(
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

        Looks in this receiver's cache, then discord.py's channel cache (filled by the
        gateway), then asks ``GET /channels/{id}``.
        """
        if channel_id in self._threads:
            return self._threads[channel_id]
        client = require_open(self.client)
        ctx: ThreadContext | None = None
        cached = client.get_channel(int(channel_id))
        if isinstance(cached, discord.Thread):
            owned = self.bot_id is not None and str(cached.owner_id) == self.bot_id
            ctx = ThreadContext(str(cached.guild.id), str(cached.parent_id), channel_id, owned)
        elif cached is None:
            try:
                raw = await converted(client.http.get_channel(channel_id))
                ctx = thread_context(parse_channel(cast(dict[str, Any], raw)), self.bot_id)
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
        hub = self.hub
        if hub is None:
            raise ChannelUnavailable("the Discord channel is not started")
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
    def support_command(self) -> app_commands.Command[Any, ..., None]:
        """The ``/support [question]`` slash command (its callback is :meth:`_on_support`)."""
        receiver = self

        @app_commands.describe(question="What do you need help with? (optional)")
        async def support(
            interaction: discord.Interaction[discord.Client], question: str | None = None
        ) -> None:
            await receiver._on_support(interaction)

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

    async def on_button(self, interaction: discord.Interaction[Any]) -> None:
        """A pressed action button: ingest it, then acknowledge by removing the buttons."""
        try:
            raw = self._raw_interaction(interaction)
            result = interaction_to_result(raw, bot_id=self.bot_id)
        except PayloadInvalid as exc:
            log.warning("discord.payload_invalid", extra={"channel": CHANNEL, "error": str(exc)})
            await quietly(interaction.response.defer())
            return
        if isinstance(result, Ignored):
            log.info(
                "discord.ignored", extra={"event_id": str(interaction.id), "reason": result.reason}
            )
            await quietly(interaction.response.defer())
            return
        if await self._ingest(result.envelope):
            await quietly(interaction.response.edit_message(view=None))
        else:
            await quietly(interaction.response.send_message(BUSY, ephemeral=True))

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
            await quietly(interaction.response.send_message(WELCOME_DM))
            if question:
                await self._ingest_interaction(raw, None)
            return
        await quietly(interaction.response.defer(ephemeral=True, thinking=True))
        here = (
            thread_context(
                inter.channel.model_copy(update={"guild_id": inter.guild_id}), self.bot_id
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
                created = await converted(
                    require_open(self.client).http.start_thread_without_message(
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
                await self.sender.post(
                    thread_id, [WELCOME.format(mention=f"<@{invoker.id}>")], mention_users=True
                )
            if question:
                await self._ingest_interaction(raw, None if here else thread_id)
            await quietly(
                interaction.edit_original_response(content=f"Your support thread: <#{thread_id}>")
            )
        except (Forbidden, NotFound, RateLimited, ChannelUnavailable, PayloadInvalid) as exc:
            log.warning("discord.support_failed", extra={"channel": CHANNEL, "error": repr(exc)})
            await quietly(
                interaction.edit_original_response(
                    content="Sorry, I could not open a support thread here. "
                    "Please send me a direct message instead."
                )
            )

    async def _ingest_interaction(self, raw: dict[str, Any], thread_id: str | None) -> None:
        result = interaction_to_result(raw, bot_id=self.bot_id, thread_id=thread_id)
        if isinstance(result, Parsed):
            await self._ingest(result.envelope)
