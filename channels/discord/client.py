"""The discord.py side of the channel: the client, reply buttons, errors and the API base URL.

- :class:`SupportClient`: a ``discord.Client`` with the gateway intents the hub needs and a
  handler for pressed reply buttons (:class:`ActionButton`, ``custom_id`` = action id).
- :func:`converted`: discord.py's errors as :mod:`bot.errors` (what the hub retries on).
- :class:`ApiOverride`: ``SWITCHBOARD_DISCORD_API_URL`` (e.g. ``http://127.0.0.1:8999/api/v10``)
  replaces the REST base URL. discord.py keeps it in the class attributes
  ``discord.http.Route.BASE`` and ``discord.webhook.async_.Route.BASE`` (interaction
  responses), so the override is process-wide: it is set when the channel starts and restored
  when it stops, and one process talks to one Discord API. With an API URL set, the gateway
  URL is the one that API's ``GET /gateway/bot`` names (``DiscordWebSocket.DEFAULT_GATEWAY``,
  also process-wide).

Sources: https://discord.com/developers/docs/topics/gateway#gateway-intents,
https://discord.com/developers/docs/topics/rate-limits, https://discordpy.readthedocs.io/
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route as _HttpRoute
from discord.webhook.async_ import Route as _WebhookRoute  # type: ignore[attr-defined]

from bot.errors import ChannelUnavailable, Forbidden, NotFound, PayloadInvalid, RateLimited

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RATELIMIT_WAIT_S = 30.0
"""Longest 429 wait discord.py sleeps through itself (its minimum); longer ones raise."""


def intents() -> discord.Intents:
    """Gateway intents: guilds, guild messages, direct messages and message content.

    ``message_content`` is privileged: enable "Message Content Intent" on the bot page of the
    developer portal (verified bots in 100+ servers must apply for it).
    """
    return discord.Intents(
        guilds=True, guild_messages=True, dm_messages=True, message_content=True
    )


class ButtonHandler(Protocol):
    """What takes a pressed reply button (:class:`channels.discord.receive.DiscordReceiver`)."""

    async def on_button(self, interaction: discord.Interaction[Any]) -> None:
        """Handle one pressed :class:`ActionButton`."""


class SupportClient(discord.Client):
    """A :class:`discord.Client` that knows who handles its reply buttons.

    Args:
        buttons: gets every pressed :class:`ActionButton`.
        **options: ``discord.Client`` options (intents, rate limit wait...).
    """

    def __init__(self, buttons: ButtonHandler, **options: Any) -> None:
        super().__init__(**options)
        self.buttons = buttons


def make_client(buttons: ButtonHandler) -> SupportClient:
    """The channel's client: :func:`intents`, no message cache, no guild chunking at startup.

    Rate-limit waits longer than :data:`MAX_RATELIMIT_WAIT_S` raise (see :func:`converted`).
    """
    return SupportClient(
        buttons,
        intents=intents(),
        max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
        max_messages=None,
        chunk_guilds_at_startup=False,
    )


def require_open(client: SupportClient | None) -> SupportClient:
    """``client`` when it is logged in and not closed.

    Raises:
        ChannelUnavailable: the Discord client is not running.
    """
    if client is None or client.is_closed():
        raise ChannelUnavailable("the Discord client is not running")
    return client


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
        """Hand the press to the channel (it becomes an inbound message with ``action``)."""
        client = interaction.client
        if isinstance(client, SupportClient):
            await client.buttons.on_button(interaction)


async def converted(call: Awaitable[T]) -> T:
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


async def quietly(call: Awaitable[Any]) -> None:
    """Answer an interaction; a failure (expired token, already answered) is only logged."""
    try:
        await call
    except (discord.HTTPException, aiohttp.ClientError) as exc:
        log.warning("discord.interaction_response_failed", extra={"error": repr(exc)})


class ApiOverride:
    """Points discord.py at ``SWITCHBOARD_DISCORD_API_URL`` and back (see the module docstring)."""

    def __init__(self) -> None:
        self._saved_bases: tuple[str, str] | None = None
        self._saved_gateway: yarl.URL | None = None

    def point_api(self, api_url: str | None) -> None:
        """Point discord.py's REST and webhook base URLs at ``api_url`` (process-wide)."""
        if not api_url:
            return
        self._saved_bases = (_HttpRoute.BASE, _WebhookRoute.BASE)
        base = api_url.rstrip("/")
        _HttpRoute.BASE = base
        _WebhookRoute.BASE = base

    async def point_gateway(self, client: discord.Client, api_url: str) -> None:
        """Use the gateway URL the configured API names (``GET /gateway/bot``), process-wide.

        discord.py connects to ``DiscordWebSocket.DEFAULT_GATEWAY`` unless resuming.

        Raises:
            ChannelUnavailable: the API does not name a gateway.
        """
        try:
            _, url, _ = await client.http.get_bot_gateway()
        except discord.GatewayNotFound as exc:
            raise ChannelUnavailable(f"no gateway at {api_url}") from exc
        self._saved_gateway = DiscordWebSocket.DEFAULT_GATEWAY
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

    def restore(self) -> None:
        """Put back the base URLs and the gateway URL saved by the ``point_*`` methods."""
        if self._saved_bases is not None:
            _HttpRoute.BASE, _WebhookRoute.BASE = self._saved_bases
            self._saved_bases = None
        if self._saved_gateway is not None:
            DiscordWebSocket.DEFAULT_GATEWAY = self._saved_gateway
            self._saved_gateway = None
