"""The Slack Web API as the channel calls it: slack-sdk errors become :mod:`bot.errors`.

:class:`SlackWebApi` is what the outbound side (:mod:`channels.slack.send`) and the agents'
channel (:mod:`channels.slack.desk`) share once the channel started: one ``AsyncWebClient``, the
workspaces' bot tokens (:class:`~channels.slack.oauth.TokenResolver`) and the HTTP session that
downloads customers' files.

Source: https://api.slack.com/web (``ok: false`` answers, HTTP 429 with ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import Settings
from bot.errors import (
    ChannelUnavailable,
    PayloadTooLarge,
    RateLimited,
    SwitchboardError,
)
from channels.slack.oauth import TokenResolver

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_RETRY_AFTER_S = 1.0
MAX_FILE_BYTES = 25 * 1024 * 1024
"""Largest customer file :meth:`SlackWebApi.fetch_file` downloads by default (bytes)."""


class SlackApiFailed(SwitchboardError):
    """The Slack Web API refused a call for good (not retried).

    Attributes:
        method: the API method (``chat.postMessage``...).
        error: Slack's ``error`` code (``channel_not_found``, ``not_in_channel``...).
    """

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error

    def __repr__(self) -> str:
        return f"SlackApiFailed(method={self.method!r}, error={self.error!r})"


def api_url(settings: Settings) -> str:
    """The Web API base URL (``SWITCHBOARD_SLACK_API_URL``, default Slack's), ending in ``/``."""
    url = settings.slack_api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def _retry_after(exc: SlackApiError) -> float:
    headers = exc.response.headers or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_RETRY_AFTER_S
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


async def call_api(
    method: str, call: Callable[..., Awaitable[AsyncSlackResponse]], **kwargs: Any
) -> AsyncSlackResponse:
    """Call a slack-sdk Web API method and convert its errors to :mod:`bot.errors`.

    Args:
        method: the API method's name (for errors and logs).
        call: the bound client method (``client.chat_postMessage``).
        **kwargs: its arguments (``token=`` included).

    Raises:
        RateLimited: HTTP 429; ``retry_after`` is Slack's ``Retry-After`` (seconds).
        ChannelUnavailable: network failure, timeout, or an HTTP 5xx.
        SlackApiFailed: any other ``ok: false`` answer.
    """
    try:
        return await call(**kwargs)
    except SlackApiError as exc:
        status = exc.response.status_code
        if status == 429 or exc.response.get("error") == "ratelimited":
            raise RateLimited(
                f"Slack {method} is rate limited", retry_after=_retry_after(exc)
            ) from exc
        if status >= 500:
            raise ChannelUnavailable(f"Slack {method} answered HTTP {status}") from exc
        raise SlackApiFailed(method, str(exc.response.get("error") or status)) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ChannelUnavailable(f"Slack {method} unreachable: {exc!r}") from exc


class SlackWebApi:
    """The started channel's Web API client, bot tokens and HTTP session.

    Args:
        client: the slack-sdk client (its ``base_url`` is :func:`api_url`).
        resolver: the workspaces' bot tokens.
        http: the session ``client`` uses; files are downloaded with it too.
    """

    def __init__(
        self, client: AsyncWebClient, resolver: TokenResolver, http: aiohttp.ClientSession
    ) -> None:
        self.client = client
        self.resolver = resolver
        self.http = http

    async def bot_token(self, *, team_id: str | None, enterprise_id: str | None = None) -> str:
        """The bot token of a workspace (see :meth:`TokenResolver.bot_token`).

        Raises:
            ConfigError: no configured token and no installation for this team.
        """
        return await self.resolver.bot_token(team_id=team_id, enterprise_id=enterprise_id)

    async def call(self, method: str, *, token: str, **kwargs: Any) -> AsyncSlackResponse:
        """Call the Web API method ``method`` (``chat.postMessage``...) with ``token``.

        The client's method of the same name (``chat_postMessage``) is called, so its argument
        handling (blocks and metadata as JSON) applies.

        Raises:
            As :func:`call_api`.
        """
        bound = getattr(self.client, method.replace(".", "_"))
        return await call_api(method, bound, token=token, **kwargs)

    async def fetch_file(
        self, url: str, *, team_id: str, max_bytes: int = MAX_FILE_BYTES
    ) -> bytes:
        """Download a file a customer shared (``url_private_download``) with the bot token.

        Args:
            url: the file's private URL.
            team_id: the workspace the file was shared in.
            max_bytes: refuse larger files (bytes).

        Raises:
            PayloadTooLarge: the file is larger than ``max_bytes``.
            ChannelUnavailable: the download failed.
            ConfigError: no bot token for the workspace.
        """
        token = await self.resolver.bot_token(team_id=team_id)
        try:
            async with self.http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status != 200:
                    raise ChannelUnavailable(f"file download answered HTTP {resp.status}")
                data = await resp.content.read(max_bytes + 1)
        except aiohttp.ClientError as exc:
            raise ChannelUnavailable(f"file download failed: {exc!r}") from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge("the file is too large", limit_bytes=max_bytes)
        return data
