"""Outbound to Discord: replies in parts, the ``Sources`` embed, buttons and typing.

Replies are split at 2,000 characters (:mod:`channels.discord.render`), citations go in a
``Sources`` embed, actions are buttons (:class:`~channels.discord.client.ActionButton`). A retried
message resumes after the parts already delivered (``idempotency_key``), and each part carries a
nonce Discord enforces, so a retry never posts a part twice. A typing indicator
(``POST /channels/{id}/typing``) is renewed every :data:`TYPING_REFRESH_S` while the hub works
on a turn. Rate limits: discord.py's HTTP client keeps its per-bucket limits and sleeps on 429;
a wait longer than :data:`~channels.discord.client.MAX_RATELIMIT_WAIT_S` is raised as
:class:`bot.errors.RateLimited` so the hub reschedules the send.

Sources: https://discord.com/developers/docs/resources/message#create-message (``nonce``,
``enforce_nonce``), https://discord.com/developers/docs/resources/channel#trigger-typing-indicator
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import discord
from cachetools import TTLCache

from bot.channel import HubAPI
from bot.config import Settings
from bot.envelope import OutboundKind, OutboundMessage, SessionKey, channel_of
from channels.discord.client import ActionButton, SupportClient, converted, require_open
from channels.discord.render import MAX_BUTTONS, citations_embed, render_text, split_message
from channels.discord.translate import CHANNEL, address_of
from channels.typing_indicator import TypingIndicators

log = logging.getLogger(__name__)

TYPING_REFRESH_S = 8.0
"""Discord shows typing for 10 seconds; it is refreshed this often while a turn runs."""


class DiscordSender:
    """Sends the channel's messages (see the module docstring).

    Args:
        settings: ``turn_timeout_s`` bounds a typing indicator.

    Attributes:
        client: the logged-in client once the channel started (sending before raises
            ChannelUnavailable).
        typing: the sessions' typing indicators.
    """

    def __init__(self, settings: Settings) -> None:
        self.client: SupportClient | None = None
        self.typing = TypingIndicators(
            self._show_typing,
            interval_s=TYPING_REFRESH_S,
            timeout_s=settings.turn_timeout_s,
            channel=CHANNEL,
        )
        self._dm_channels: TTLCache[str, str] = TTLCache(10_000, 24 * 3600.0)
        self._progress: TTLCache[str, int] = TTLCache(10_000, 3600.0)

    async def send(self, out: OutboundMessage) -> None:
        """Deliver a reply: split at 2,000 characters, citations embed, buttons, typing.

        Raises:
            RateLimited: Discord asked to wait longer than discord.py waits by itself.
            ChannelUnavailable: Discord is unreachable or failed (5xx), or not started.
            Forbidden: the bot lacks a permission in the channel (403).
            NotFound: the thread or user is gone (404).
            PayloadInvalid: Discord rejected the message (400) or the key is no Discord key.
        """
        client = require_open(self.client)
        address = address_of(out.session_key)
        if address.channel_id is not None:
            channel_id = address.channel_id
        else:
            assert address.user_id is not None
            channel_id = await self._dm_channel(address.user_id)
        if out.kind == OutboundKind.TYPING:
            await converted(client.http.send_typing(channel_id))
            return
        self.typing.stop(out.session_key)
        embed_data = citations_embed(out.citations)
        view: discord.ui.View | None = None
        if out.actions:
            view = discord.ui.View(timeout=None)
            for action in out.actions[:MAX_BUTTONS]:
                view.add_item(ActionButton(action.id, action.label))
        await self.post(
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

    async def post(
        self,
        channel_id: str,
        chunks: list[str],
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        idempotency_key: str | None = None,
        mention_users: bool = False,
    ) -> None:
        """Post ``chunks`` in order; the embed and buttons go with the last one.

        Args:
            channel_id: the channel, thread or DM channel.
            chunks: the parts (empty ones are skipped unless the last carries embed or view).
            embed: goes with the last part.
            view: the buttons; go with the last part.
            idempotency_key: parts already posted under it are not posted again.
            mention_users: let ``<@id>`` in the text notify the user.

        Raises:
            As :meth:`send`.
        """
        client = require_open(self.client)
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
            await converted(target.send(content, **options))
            if idempotency_key:
                self._progress[idempotency_key] = n + 1

    def note_dm_channel(self, user_id: str, channel_id: str) -> None:
        """Remember the DM channel of a user (seen on an inbound direct message)."""
        self._dm_channels[user_id] = channel_id

    async def _dm_channel(self, user_id: str) -> str:
        """The DM channel with ``user_id``: remembered, else ``POST /users/@me/channels``."""
        known = self._dm_channels.get(user_id)
        if known is not None:
            return known
        data = await converted(require_open(self.client).http.start_private_message(user_id))
        channel_id = str(data["id"])
        self._dm_channels[user_id] = channel_id
        return channel_id

    async def _show_typing(self, key: SessionKey) -> bool:
        await self.send(OutboundMessage(session_key=key, text="", kind=OutboundKind.TYPING))
        return True

    async def follow_typing(self, hub: HubAPI) -> None:
        """Show typing for Discord sessions while the hub composes a reply (``typing`` events).

        A message of the bot or an agent (stored by any process) ends the indicator.
        """
        async with hub.events.subscribe() as sub:
            async for event in sub:
                if channel_of(event.session_key) != CHANNEL:
                    continue
                if event.type == "typing":
                    self.typing.start(event.session_key)
                elif event.type == "message" and event.data.get("role") != "customer":
                    self.typing.stop(event.session_key)
